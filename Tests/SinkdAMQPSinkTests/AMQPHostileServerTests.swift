import Foundation
import NIOConcurrencyHelpers
import NIOCore
import Testing
import SinkdCore
import SinkdDelivery
@testable import SinkdAMQPSink
import SinkdTestSupport

/// AMQP brokers gone wrong (issue 33: a test per family for a silent server, a trickling one, a
/// huge announced length, a flood of unsolicited frames and a wrong success reply). The broker is
/// scripted over a real socket with sinkd's own frame codec: enough of AMQP 0-9-1 to get a client
/// to publish (connection.start/tune/open, channel.open, queue.declare, confirm.select).
// .timeLimit: a guard against a hang, not a measurement. It counts the wait for a blocking test
// slot (BlockingThreads) too, which on a loaded CI machine has taken over a minute.
@Suite(.serialized, .timeLimit(.minutes(5))) struct AMQPHostileServerTests {
    enum Misbehaviour: Sendable {
        /// Accepts and sends nothing.
        case silent
        /// Sends connection.start (36 bytes) one byte every 250 ms: 9 s in all.
        case trickle
        /// Announces a frame of 2 GiB.
        case hugeFrame
        /// Answers every publish with acks for tags never published, a thousand of them.
        case unsolicitedAcks
        /// Answers every publish with a single ack for tag 999.
        case wrongAck
    }

    /// Each connection's bytes so far (the script sees chunks).
    final class Buffers: Sendable {
        let box = NIOLockedValueBox<[ObjectIdentifier: [UInt8]]>([:])
    }

    static func frame(_ channel: UInt16, _ method: AMQPMethod) -> [UInt8] {
        var out: [UInt8] = []
        AMQPFrameEncoder.append(AMQPFrame(channel: channel, .method(method)), to: &out)
        return out
    }

    static func broker(_ misbehaviour: Misbehaviour) throws -> ScriptedTCPServer {
        let buffers = Buffers()
        let start = frame(
            0,
            .connectionStart(
                versionMajor: 0, versionMinor: 9, serverProperties: AMQPTable(), mechanisms: "PLAIN", locales: "en_US"))
        return try ScriptedTCPServer { connection, received in
            let key = ObjectIdentifier(connection)
            var bytes = buffers.box.withLockedValue { $0[key, default: []] } + received
            if bytes.starts(with: AMQPFrame.protocolHeader) {
                bytes.removeFirst(AMQPFrame.protocolHeader.count)
                switch misbehaviour {
                case .silent: break
                case .trickle: connection.trickle(start, every: .milliseconds(250))
                case .hugeFrame: connection.write([1, 0, 0, 0x7F, 0xFF, 0xFF, 0xFF] + Array(repeating: 0, count: 4096))
                case .unsolicitedAcks, .wrongAck: connection.write(start)
                }
            }
            let decoder = AMQPFrameDecoder()
            while let (frame, used) = (try? bytes.withUnsafeBytes { try decoder.decode($0) }) ?? nil {
                bytes.removeFirst(used)
                guard case .method(let method) = frame.payload else { continue }
                switch method {
                case .connectionStartOk:
                    connection.write(Self.frame(0, .connectionTune(channelMax: 16, frameMax: 131_072, heartbeat: 0)))
                case .connectionOpen: connection.write(Self.frame(0, .connectionOpenOk))
                case .channelOpen: connection.write(Self.frame(frame.channel, .channelOpenOk))
                case .queueDeclare(let queue, _, _, _, _, _, _):
                    connection.write(
                        Self.frame(frame.channel, .queueDeclareOk(queue: queue, messageCount: 0, consumerCount: 0)))
                case .confirmSelect: connection.write(Self.frame(frame.channel, .confirmSelectOk))
                case .basicPublish:
                    if misbehaviour == .wrongAck {
                        connection.write(Self.frame(frame.channel, .basicAck(deliveryTag: 999, multiple: false)))
                    } else {
                        var flood: [UInt8] = []
                        for tag in 5_000..<6_000 {
                            flood += Self.frame(frame.channel, .basicAck(deliveryTag: UInt64(tag), multiple: false))
                        }
                        connection.write(flood)
                    }
                default: break
                }
            }
            buffers.box.withLockedValue { $0[key] = bytes }
        }
    }

    /// Sends 3 records through a family whose broker is `server`; the outcomes or the connection error.
    static func send(
        _ server: ScriptedTCPServer, confirmTimeout: Duration = .seconds(1)
    ) async throws -> Result<[DeliveryOutcome], SinkConnectionError> {
        var amqp = AMQPSinkConfig()
        amqp.urls = ["amqp://guest:guest@127.0.0.1:\(server.port)/%2f"]
        amqp.confirmTimeout = confirmTimeout
        let family = AMQPSinkFamily(config: amqp)
        let client = try family.makeClient(
            for: try SinkAddress.parse(identity: "amqp_queue:hostile"), options: amqp.options)
        defer {
            Task {
                await client.close(); await family.shutdown()
            }
        }
        do {
            return .success(
                try await client.send(
                    (1...3).map {
                        SequencedRecord(
                            seq: UInt64($0),
                            record: EventRecord(id: "r\($0)", sink: "amqp_queue:hostile", payload: Array("{}".utf8)))
                    }))
        } catch {
            return .failure(error)
        }
    }

    static func expectFailure(
        _ result: Result<[DeliveryOutcome], SinkConnectionError>, containing text: String, took: Duration,
        under limit: Duration
    ) {
        #expect(took < limit, "\(took)")
        guard case .failure(let error) = result else {
            Issue.record("expected a connection error, got \(result)")
            return
        }
        #expect(error.message.contains(text), "\(error)")
    }

    @Test func aSilentBrokerFailsTheConnectionAtTheHandshakeDeadline() async throws {
        let start = ContinuousClock.now
        let result = try await Self.send(try Self.broker(.silent))
        Self.expectFailure(
            result, containing: "no connection.open-ok within 5 s", took: ContinuousClock.now - start,
            under: .seconds(30))
    }

    @Test func aTricklingHandshakeFailsAtTheSameDeadline() async throws {
        let start = ContinuousClock.now
        let result = try await Self.send(try Self.broker(.trickle))
        Self.expectFailure(
            result, containing: "no connection.open-ok within 5 s", took: ContinuousClock.now - start,
            under: .seconds(30))
    }

    @Test func aHugeAnnouncedFrameIsRefusedAtItsHeader() async throws {
        let start = ContinuousClock.now
        let result = try await Self.send(try Self.broker(.hugeFrame))
        Self.expectFailure(result, containing: "above frame_max", took: ContinuousClock.now - start, under: .seconds(4))
    }

    /// Acks for tags never published are not confirms of what was: the batch fails at the
    /// confirm deadline, nothing counted delivered.
    @Test func aFloodOfAcksForUnpublishedTagsDeliversNothing() async throws {
        let result = try await Self.send(try Self.broker(.unsolicitedAcks))
        Self.expectFailure(result, containing: "no publisher confirm within 1000 ms", took: .zero, under: .seconds(1))
    }

    @Test func anAckForAnotherTagIsNotADelivery() async throws {
        let result = try await Self.send(try Self.broker(.wrongAck))
        Self.expectFailure(result, containing: "no publisher confirm within 1000 ms", took: .zero, under: .seconds(1))
    }
}
