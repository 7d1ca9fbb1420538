import Foundation
import NIOCore
import NIOPosix
import Testing
import SinkdCore
import SinkdDelivery
import SinkdTestSupport
@testable import SinkdNATSSink

/// Servers that speak just enough NATS to go wrong (issue 33).
// .timeLimit: a guard against a hang, not a measurement. It counts the wait for a blocking test
// slot (BlockingThreads) too, which on a loaded CI machine has taken over a minute.
@Suite(.serialized, .timeLimit(.minutes(5))) struct NATSHostileServerTests {
    static let info = #"INFO {"server_id":"FAKE","version":"2.10.0","headers":true,"max_payload":1048576}"# + "\r\n"

    /// The review: a server that floods PINGs and stops reading took sinkd from 39 MB to 2.76 GB
    /// in 20 s (every PONG queued). Now one PONG is outstanding at a time, and more than 100 PINGs
    /// within a second is a flood that closes the connection.
    @Test func pongsAreOneAtATimeAndAPingFloodClosesTheConnection() {
        var m = NATSConnectionStateMachine(tlsWanted: false)
        let second: UInt64 = 1_000_000_000
        #expect(m.received(.ping, atNanos: 5 * second) == .sendPong)
        #expect(m.received(.ping, atNanos: 5 * second + 1) == .none, "the unwritten PONG answers this PING too")
        m.pongWritten()
        #expect(m.received(.ping, atNanos: 5 * second + 2) == .sendPong)
        for i in 3..<NATSConnectionStateMachine.maxPingsPerSecond {  // PINGs 4 to 100 of this second
            #expect(m.received(.ping, atNanos: 5 * second + UInt64(i)) == .none)
        }
        #expect(
            m.received(.ping, atNanos: 5 * second + 1000)
                == .close(.protocolViolation("the server sent more than 100 PINGs within a second")))
        #expect(m.received(.ping, atNanos: 9 * second) == .none, "closed")

        var slow = NATSConnectionStateMachine(tlsWanted: false)
        for i in 0..<300 {
            if i > 0 { slow.pongWritten() }
            #expect(
                slow.received(.ping, atNanos: UInt64(i) * second / 50) == .sendPong,
                "50 PINGs a second for 6 s is no flood (\(i))")
        }
    }

    @Test func aMaxPayloadThatIsNotASizeIsAProtocolErrorNotARefusalOfRecords() throws {
        for bad in ["0", "-1", "18446744073709551616", "1.5", "\"big\"", "true", "67108865"] {
            let json = Array(#"{"server_id":"S","max_payload":\#(bad)}"#.utf8)
            #expect(throws: NATSProtocolError.self, "max_payload \(bad)") { try NATSServerInfo(json: json) }
        }
        #expect(try NATSServerInfo(json: Array(#"{"max_payload":67108864}"#.utf8)).maxPayload == 64 << 20)
        #expect(
            try NATSServerInfo(json: Array(#"{"server_id":"S"}"#.utf8)).maxPayload == 1 << 20, "absent: the default")
    }

    /// A server announcing max_payload 0 dead-lettered every record; now the connection fails with
    /// the reason and nothing is refused.
    @Test func aServerAnnouncingMaxPayloadZeroFailsTheConnectionWithTheReason() async throws {
        let server = try ScriptedTCPServer { connection, received in
            if received.isEmpty { connection.write(#"INFO {"server_id":"FAKE","max_payload":0}"# + "\r\n") }
        }
        var nats = NATSSinkConfig()
        nats.servers = ["nats://127.0.0.1:\(server.port)"]
        let family = NATSSinkFamily(config: nats, ackTimeout: .seconds(2))
        let client = try family.makeClient(for: try SinkAddress.parse(identity: "nats:alerts"), options: nats.options)
        do {
            let outcomes = try await client.send([
                SequencedRecord(seq: 1, record: EventRecord(id: "r1", sink: "nats:alerts", payload: Array("{}".utf8)))
            ])
            Issue.record("expected a connection error, got \(outcomes)")
        } catch {
            #expect(error.description.contains("max_payload 0"), "\(error)")
        }
        await client.close()
    }

    /// End to end: the server answers the handshake, then floods PINGs and reads nothing. The
    /// connection is closed by the flood limit within seconds (before, it grew without bound).
    @Test func aServerFloodingPingsIsDisconnected() async throws {
        let server = try ScriptedTCPServer { connection, received in
            if received.isEmpty {
                connection.write(Self.info)
            } else if String(decoding: received, as: UTF8.self).contains("PING") {
                connection.write("PONG\r\n")
                connection.flood(Array(String(repeating: "PING\r\n", count: 1000).utf8), total: 64 << 20)
            }
        }
        let connection = try await NATSConnection.connect(
            to: NATSServerAddress(host: "127.0.0.1", port: server.port), tls: nil, tlsWanted: false,
            group: MultiThreadedEventLoopGroup.singleton, timeout: .seconds(5),
            options: { _ in NATSConnectOptions() }, onInfo: { _ in })
        let closed = connection.channel.closeFuture
        let start = ContinuousClock.now
        try await closed.get()
        #expect(ContinuousClock.now - start < .seconds(20))
    }

    /// Success only when the protocol says so: a PubAck names the stream and the seq. A reply `{}`
    /// or `{"ok":true}` was counted as stored.
    @Test func onlyAPubAckWithStreamAndSeqIsAStore() {
        func outcome(_ payload: String) -> JetStreamPubAck.Result {
            JetStreamPubAck.outcome(NATSReply(headers: nil, payload: Array(payload.utf8)), timeout: .seconds(10))
        }
        #expect(outcome(#"{"stream":"AUDIT","seq":17}"#) == .outcome(.delivered))
        #expect(outcome(#"{"stream":"AUDIT","domain":"hub","seq":17,"duplicate":true}"#) == .outcome(.delivered))
        for wrong in [
            "{}", #"{"ok":true}"#, #"{"stream":"AUDIT"}"#, #"{"seq":1}"#, #"{"stream":"A","seq":"x"}"#, "PONG", "",
        ] {
            guard case .outcome(.retryable(let reason, _)) = outcome(wrong) else {
                Issue.record("\(wrong): expected a retry")
                continue
            }
            #expect(reason.contains("not a JetStream PubAck"), "\(wrong): \(reason)")
        }
    }

    /// End to end: a server that answers every JetStream publish `{}` stores nothing: the records
    /// are retried, never counted delivered.
    @Test func aServerAnsweringEmptyObjectsToJetStreamPublishesDeliversNothing() async throws {
        let server = try ScriptedTCPServer { connection, received in
            if received.isEmpty {
                connection.write(Self.info)
                return
            }
            let text = String(decoding: received, as: UTF8.self)
            if text.contains("PING") { connection.write("PONG\r\n") }
            for line in text.split(separator: "\r\n") where line.hasPrefix("HPUB ") {
                let parts = line.split(separator: " ")
                guard parts.count >= 5 else { continue }
                connection.write("MSG \(parts[2]) 1 2\r\n{}\r\n")
            }
        }
        var nats = NATSSinkConfig()
        nats.servers = ["nats://127.0.0.1:\(server.port)"]
        let family = NATSSinkFamily(config: nats, ackTimeout: .seconds(2))
        let client = try family.makeClient(for: try SinkAddress.parse(identity: "jsm:audit"), options: nats.options)
        let outcomes = try await client.send(
            (1...3).map {
                SequencedRecord(
                    seq: UInt64($0), record: EventRecord(id: "r\($0)", sink: "jsm:audit", payload: Array("{}".utf8)))
            })
        #expect(outcomes.count == 3)
        #expect(outcomes.allSatisfy { if case .retryable = $0 { true } else { false } }, "\(outcomes)")
        await client.close()
    }

    /// A reply announcing a huge MSG is refused at its header (a sink's connection gets PubAcks,
    /// at most 1 MiB is allowed), not buffered up to the protocol's 64 MiB.
    @Test func aHugeAnnouncedMessageIsRefusedAtItsHeader() async throws {
        let server = try ScriptedTCPServer { connection, received in
            if received.isEmpty {
                connection.write(Self.info)
            } else if String(decoding: received, as: UTF8.self).contains("PING") {
                connection.write("PONG\r\nMSG _INBOX.x.1.0 1 60000000\r\n")
                connection.flood(Array(repeating: UInt8(ascii: "z"), count: 64 << 10), total: 8 << 20)
            }
        }
        let connection = try await NATSConnection.connect(
            to: NATSServerAddress(host: "127.0.0.1", port: server.port), tls: nil, tlsWanted: false,
            group: MultiThreadedEventLoopGroup.singleton, timeout: .seconds(5),
            options: { _ in NATSConnectOptions() }, onInfo: { _ in })
        let start = ContinuousClock.now
        try await connection.channel.closeFuture.get()
        #expect(ContinuousClock.now - start < .seconds(5), "closed at the header")
    }
}
