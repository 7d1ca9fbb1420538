import Testing
@testable import SinkdAMQPSink
import NIOCore
import NIOTestUtils

/// The AMQP 0-9-1 codec on byte fixtures: every frame type, every method a publisher uses, frames
/// split across reads, malformed input; then the connection and channel state machines.
@Suite struct AMQPCodecTests {
    /// The channel decoder on every fixture, fed whole, a byte at a time and in every split
    /// NIO's ByteToMessageDecoderVerifier tries, and at end of stream.
    @Test func theChannelDecoderHandlesEverySplit() throws {
        let pairs = Self.fixtures.map { (name, frame) in
            (ByteBuffer(bytes: Self.hex(String(name.split(separator: " ").last!))), [frame])
        }
        try ByteToMessageDecoderVerifier.verifyDecoder(inputOutputPairs: pairs) { AMQPFrameByteDecoder() }
    }

    static func hex(_ s: String) -> [UInt8] {
        var out: [UInt8] = []
        var chars = Array(s.filter { !$0.isWhitespace })
        while chars.count >= 2 {
            out.append(UInt8(String(chars[0..<2]), radix: 16)!)
            chars.removeFirst(2)
        }
        return out
    }

    static func decode(_ bytes: [UInt8]) throws -> (AMQPFrame, Int)? {
        try bytes.withUnsafeBytes { try AMQPFrameDecoder().decode($0) }
    }

    /// Byte fixtures written from the specification's grammar (type, channel, size, payload, 0xCE).
    static let fixtures: [(String, AMQPFrame)] = [
        ("heartbeat", "08 0000 00000000 CE", AMQPFrame(channel: 0, .heartbeat)),
        (
            "connection.tune", "01 0000 0000000C 000A 001E 07FF 00020000 003C CE",
            AMQPFrame(channel: 0, .method(.connectionTune(channelMax: 2047, frameMax: 131_072, heartbeat: 60)))
        ),
        ("connection.open-ok", "01 0000 00000005 000A 0029 00 CE", AMQPFrame(channel: 0, .method(.connectionOpenOk))),
        (
            "connection.close", "01 0000 00000015 000A 0032 0193 0A 41434345535320524546 0000 0000 CE",
            AMQPFrame(
                channel: 0, .method(.connectionClose(replyCode: 403, replyText: "ACCESS REF", classID: 0, methodID: 0)))
        ),
        (
            "connection.blocked", "01 0000 0000000A 000A 003C 05 6C6F77206D CE",
            AMQPFrame(channel: 0, .method(.connectionBlocked(reason: "low m")))
        ),
        ("connection.unblocked", "01 0000 00000004 000A 003D CE", AMQPFrame(channel: 0, .method(.connectionUnblocked))),
        ("channel.open-ok", "01 0001 00000008 0014 000B 00000000 CE", AMQPFrame(channel: 1, .method(.channelOpenOk))),
        (
            "channel.close", "01 0001 00000010 0014 0028 0196 05 5052454346 0032 000A CE",
            AMQPFrame(channel: 1, .method(.channelClose(replyCode: 406, replyText: "PRECF", classID: 50, methodID: 10)))
        ),
        ("confirm.select-ok", "01 0001 00000004 0055 000B CE", AMQPFrame(channel: 1, .method(.confirmSelectOk))),
        ("exchange.declare-ok", "01 0001 00000004 0028 000B CE", AMQPFrame(channel: 1, .method(.exchangeDeclareOk))),
        (
            "queue.declare-ok", "01 0001 0000000E 0032 000B 01 71 00000005 00000001 CE",
            AMQPFrame(channel: 1, .method(.queueDeclareOk(queue: "q", messageCount: 5, consumerCount: 1)))
        ),
        (
            "basic.ack multiple", "01 0002 0000000D 003C 0050 000000000000002A 01 CE",
            AMQPFrame(channel: 2, .method(.basicAck(deliveryTag: 42, multiple: true)))
        ),
        (
            "basic.nack", "01 0002 0000000D 003C 0078 0000000000000007 02 CE",
            AMQPFrame(channel: 2, .method(.basicNack(deliveryTag: 7, multiple: false, requeue: true)))
        ),
        (
            "basic.return", "01 0001 00000013 003C 0032 0138 08 4E4F5F524F555445 01 78 01 6B CE",
            AMQPFrame(
                channel: 1, .method(.basicReturn(replyCode: 312, replyText: "NO_ROUTE", exchange: "x", routingKey: "k"))
            )
        ),
        ("body", "03 0001 00000003 7B7D0A CE", AMQPFrame(channel: 1, .body([0x7B, 0x7D, 0x0A]))),
    ].map { ($0.0, hex($0.1), $0.2) }.map { ($0.0 + " " + $0.1.map { String(format: "%02x", $0) }.joined(), $0.2) }

    @Test(arguments: 0..<fixtures.count) func decodesEachFrameAndWaitsForSplitOnes(_ i: Int) throws {
        let (name, expected) = Self.fixtures[i]
        let bytes = Self.hex(String(name.split(separator: " ").last!))
        let decoded = try Self.decode(bytes)
        #expect(decoded?.0 == expected, "\(name)")
        #expect(decoded?.1 == bytes.count)
        for cut in 0..<bytes.count {
            #expect(try Self.decode(Array(bytes[0..<cut])) == nil, "\(name) cut at \(cut)")
        }
        // Encoding gives the same bytes back.
        var encoded: [UInt8] = []
        AMQPFrameEncoder.append(expected, to: &encoded)
        #expect(encoded == bytes, "\(name) re-encoded")
    }

    @Test func encodesWhatAPublisherSends() {
        func bytes(_ frame: AMQPFrame) -> [UInt8] {
            var out: [UInt8] = []
            AMQPFrameEncoder.append(frame, to: &out)
            return out
        }
        #expect(
            bytes(AMQPFrame(channel: 0, .method(.connectionTuneOk(channelMax: 2047, frameMax: 131_072, heartbeat: 30))))
                == Self.hex("01 0000 0000000C 000A 001F 07FF 00020000 001E CE"))
        #expect(
            bytes(AMQPFrame(channel: 0, .method(.connectionOpen(virtualHost: "/"))))
                == Self.hex("01 0000 00000008 000A 0028 01 2F 00 00 CE"))
        #expect(bytes(AMQPFrame(channel: 1, .method(.channelOpen))) == Self.hex("01 0001 00000005 0014 000A 00 CE"))
        #expect(
            bytes(AMQPFrame(channel: 1, .method(.confirmSelect(noWait: false))))
                == Self.hex("01 0001 00000005 0055 000A 00 CE"))
        #expect(
            bytes(
                AMQPFrame(
                    channel: 1, .method(.basicPublish(exchange: "", routingKey: "q", mandatory: true, immediate: false))
                ))
                == Self.hex("01 0001 0000000A 003C 0028 0000 00 01 71 01 CE"))
        #expect(
            bytes(
                AMQPFrame(
                    channel: 1,
                    .method(
                        .queueDeclare(
                            queue: "q", passive: false, durable: true, exclusive: false, autoDelete: false,
                            noWait: false,
                            arguments: ["x-max-priority": .int32(5)]))))
                == Self.hex(
                    "01 0001 00000021 0032 000A 0000 01 71 02 00000014 0E 782D6D61782D7072696F72697479 49 00000005 CE"))
        #expect(
            bytes(
                AMQPFrame(
                    channel: 1,
                    .method(
                        .exchangeDeclare(
                            exchange: "e", type: "topic", passive: false, durable: true, autoDelete: true,
                            internal: false, noWait: false, arguments: AMQPTable()))))
                == Self.hex("01 0001 00000013 0028 000A 0000 01 65 05 746F706963 06 00000000 CE"))
        // PLAIN start-ok: \0user\0password.
        let startOk = bytes(
            AMQPFrame(
                channel: 0,
                .method(
                    .connectionStartOk(
                        clientProperties: AMQPTable(), mechanism: "PLAIN", response: Array("\0u\0p".utf8),
                        locale: "en_US"))))
        #expect(
            startOk == Self.hex("01 0000 0000001C 000A 000B 00000000 05 504C41494E 00000004 00750070 05 656E5F5553 CE"))
    }

    @Test func contentHeaderCarriesEveryPropertyAndRoundTrips() throws {
        var p = AMQPProperties()
        p.contentType = "application/json"
        p.contentEncoding = "UTF-8"
        p.headers = [
            "workflowInstanceId": .string("wf-1"), "n": .int64(-3), "ok": .bool(true),
            "nested": .table(["a": .array([.uint8(1), .void])]),
        ]
        p.deliveryMode = 2
        p.priority = 7
        p.correlationID = "id-1"
        p.messageID = "id-1"
        p.timestamp = 1_700_000_000
        let frame = AMQPFrame(channel: 3, .header(classID: 60, bodySize: 1234, properties: p))
        var bytes: [UInt8] = []
        AMQPFrameEncoder.append(frame, to: &bytes)
        // Property flags: content-type, content-encoding, headers, delivery-mode, priority,
        // correlation-id, message-id, timestamp = bits 15 14 13 12 11 10 7 6.
        #expect(bytes[7 + 12] == 0xFC && bytes[7 + 13] == 0xC0)
        #expect(try Self.decode(bytes)?.0 == frame)
    }

    @Test func bodiesAreSplitAtFrameMax() throws {
        var bytes: [UInt8] = []
        var p = AMQPProperties()
        p.messageID = "m"
        let body = [UInt8](repeating: 0x41, count: 10_000)
        AMQPFrameEncoder.appendPublish(
            channel: 1, exchange: "", routingKey: "q", mandatory: true, properties: p, body: body, frameMax: 4096,
            to: &bytes)
        var frames: [AMQPFrame] = []
        var offset = 0
        while offset < bytes.count,
            let (frame, used) = try bytes[offset...].withUnsafeBytes({
                try AMQPFrameDecoder(maxFrameSize: 4096).decode($0)
            })
        {
            frames.append(frame)
            offset += used
        }
        #expect(offset == bytes.count)
        #expect(frames.count == 5, "method, header, 3 body frames of at most 4088 bytes")
        let sizes = frames.compactMap { if case .body(let b) = $0.payload { b.count } else { nil } }
        #expect(sizes == [4088, 4088, 1824])
    }

    @Test(arguments: [
        ("no end octet", "01 0000 00000004 000A 003D 00"),
        ("unknown frame type", "05 0000 00000000 CE"),
        ("unknown method", "01 0000 00000004 00FF 0001 CE"),
        ("truncated argument", "01 0000 00000006 000A 001E 07FF CE"),
        ("protocol header back", "41 4D 51 50 00 00 09 01"),
        ("unknown field type", "01 0000 00000012 000A 000A 00 09 00000005 01 61 5A 00 00 00000000 00000000 CE"),
    ])
    func rejectsMalformedFrames(_ name: String, _ hex: String) {
        #expect(throws: AMQPProtocolError.self, "\(name)") { try Self.decode(Self.hex(hex)) }
    }

    @Test func refusesFramesAboveFrameMax() {
        let big = Self.hex("03 0001 00100000") + [UInt8](repeating: 0, count: 16)
        #expect(throws: AMQPProtocolError.self) {
            try big.withUnsafeBytes { try AMQPFrameDecoder(maxFrameSize: 131_072).decode($0) }
        }
    }

    @Test func decodesConnectionStartWithItsServerProperties() throws {
        var bytes: [UInt8] = []
        let start = AMQPMethod.connectionStart(
            versionMajor: 0, versionMinor: 9,
            serverProperties: [
                "product": .string("RabbitMQ"),
                "capabilities": .table(["publisher_confirms": .bool(true), "basic.nack": .bool(true)]),
                "cluster_name": .string("rabbit@host"),
            ], mechanisms: "AMQPLAIN PLAIN", locales: "en_US")
        AMQPFrameEncoder.append(AMQPFrame(channel: 0, .method(start)), to: &bytes)
        #expect(try Self.decode(bytes)?.0 == AMQPFrame(channel: 0, .method(start)))
    }

    // MARK: Connection state machine

    static func machine(heartbeat: UInt16 = 30) -> AMQPConnectionStateMachine {
        AMQPConnectionStateMachine(
            credentials: .init(user: "u", password: "p", virtualHost: "/v"), heartbeatSeconds: heartbeat,
            clientProperties: AMQPTable())
    }

    static func start(_ mechanisms: String = "AMQPLAIN PLAIN") -> AMQPFrame {
        AMQPFrame(
            channel: 0,
            .method(
                .connectionStart(
                    versionMajor: 0, versionMinor: 9, serverProperties: AMQPTable(), mechanisms: mechanisms,
                    locales: "en_US")))
    }

    @Test func handshakeNegotiatesAndOpensTheVhost() {
        var m = Self.machine(heartbeat: 30)
        #expect(
            m.received(Self.start(), nowMillis: 0)
                == .send([
                    AMQPFrame(
                        channel: 0,
                        .method(
                            .connectionStartOk(
                                clientProperties: AMQPTable(), mechanism: "PLAIN", response: Array("\0u\0p".utf8),
                                locale: "en_US")))
                ]))
        #expect(
            m.received(
                AMQPFrame(channel: 0, .method(.connectionTune(channelMax: 0, frameMax: 4096, heartbeat: 60))),
                nowMillis: 0)
                == .send([
                    AMQPFrame(channel: 0, .method(.connectionTuneOk(channelMax: 2047, frameMax: 4096, heartbeat: 30))),
                    AMQPFrame(channel: 0, .method(.connectionOpen(virtualHost: "/v"))),
                ]))
        #expect(!m.isOpen)
        #expect(
            m.received(AMQPFrame(channel: 0, .method(.connectionOpenOk)), nowMillis: 0)
                == .opened(.init(channelMax: 2047, frameMax: 4096, heartbeat: 30)))
        #expect(m.isOpen)
    }

    @Test func heartbeatIsTheSmallerNonZeroProposal() {
        #expect(AMQPConnectionStateMachine.negotiate(60, 30) == 30)
        #expect(AMQPConnectionStateMachine.negotiate(0, 30) == 30)
        #expect(AMQPConnectionStateMachine.negotiate(10, 0) == 10)
        #expect(AMQPConnectionStateMachine.negotiate(0, 0) == 0)
    }

    static func opened(heartbeat: UInt16 = 10) -> AMQPConnectionStateMachine {
        var m = machine(heartbeat: heartbeat)
        _ = m.received(start(), nowMillis: 0)
        _ = m.received(
            AMQPFrame(channel: 0, .method(.connectionTune(channelMax: 100, frameMax: 131_072, heartbeat: heartbeat))),
            nowMillis: 0)
        _ = m.received(AMQPFrame(channel: 0, .method(.connectionOpenOk)), nowMillis: 0)
        return m
    }

    @Test func refusedCredentialsAndServerClosesAreFailures() {
        var m = Self.machine()
        _ = m.received(Self.start(), nowMillis: 0)
        #expect(
            m.received(
                AMQPFrame(
                    channel: 0,
                    .method(
                        .connectionClose(
                            replyCode: 403, replyText: "ACCESS_REFUSED - Login was refused", classID: 10, methodID: 11))
                ), nowMillis: 0)
                == .fail(
                    .refused(code: 403, text: "ACCESS_REFUSED - Login was refused"),
                    send: [AMQPFrame(channel: 0, .method(.connectionCloseOk))]))
        var o = Self.opened()
        #expect(
            o.received(
                AMQPFrame(
                    channel: 0,
                    .method(
                        .connectionClose(
                            replyCode: 320, replyText: "CONNECTION_FORCED - shutdown", classID: 0, methodID: 0))),
                nowMillis: 0)
                == .fail(
                    .closedByServer(code: 320, text: "CONNECTION_FORCED - shutdown"),
                    send: [AMQPFrame(channel: 0, .method(.connectionCloseOk))]))
        var n = Self.machine()
        guard case .fail(.protocolViolation, _) = n.received(Self.start("AMQPLAIN"), nowMillis: 0) else {
            Issue.record("PLAIN is required")
            return
        }
    }

    @Test func blockedAndUnblocked() {
        var m = Self.opened()
        #expect(
            m.received(AMQPFrame(channel: 0, .method(.connectionBlocked(reason: "low on memory"))), nowMillis: 0)
                == .blocked("low on memory"))
        #expect(m.blockedReason == "low on memory")
        #expect(m.received(AMQPFrame(channel: 0, .method(.connectionUnblocked)), nowMillis: 0) == .unblocked)
        #expect(m.blockedReason == nil)
    }

    @Test func heartbeatsAreSentAndMissedOnesFail() {
        var m = Self.opened(heartbeat: 10)
        #expect(m.heartbeatTick(nowMillis: 5_000) == .send([AMQPFrame(channel: 0, .heartbeat)]))
        _ = m.received(AMQPFrame(channel: 0, .heartbeat), nowMillis: 15_000)
        #expect(
            m.heartbeatTick(nowMillis: 34_000) == .send([AMQPFrame(channel: 0, .heartbeat)]),
            "19 s of silence: still within two intervals")
        #expect(m.heartbeatTick(nowMillis: 36_000) == .fail(.missedHeartbeats(seconds: 20), send: []))
    }

    @Test func channelFramesAreRoutedOnlyOnceOpen() {
        var m = Self.machine()
        guard
            case .fail(.protocolViolation, _) = m.received(AMQPFrame(channel: 1, .method(.channelOpenOk)), nowMillis: 0)
        else {
            Issue.record("a channel frame before open is a violation")
            return
        }
        var o = Self.opened()
        let frame = AMQPFrame(channel: 1, .method(.channelOpenOk))
        #expect(o.received(frame, nowMillis: 0) == .channelFrame(frame))
    }

    // MARK: Channel state machine

    static let declare = AMQPMethod.queueDeclare(
        queue: "q", passive: false, durable: true, exclusive: false, autoDelete: false, noWait: false,
        arguments: AMQPTable())

    static func readyChannel() -> AMQPChannelStateMachine {
        var c = AMQPChannelStateMachine(id: 1, declarations: [declare])
        _ = c.open()
        _ = c.received(.method(.channelOpenOk))
        _ = c.received(.method(.confirmSelectOk))
        _ = c.received(.method(.queueDeclareOk(queue: "q", messageCount: 0, consumerCount: 0)))
        return c
    }

    @Test func channelSelectsConfirmsThenDeclaresOnceThenIsReady() {
        var c = AMQPChannelStateMachine(id: 4, declarations: [Self.declare])
        #expect(c.open() == [AMQPFrame(channel: 4, .method(.channelOpen))])
        #expect(
            c.received(.method(.channelOpenOk))
                == .send([AMQPFrame(channel: 4, .method(.confirmSelect(noWait: false)))]))
        #expect(c.received(.method(.confirmSelectOk)) == .send([AMQPFrame(channel: 4, .method(Self.declare))]))
        #expect(!c.isReady)
        #expect(c.received(.method(.queueDeclareOk(queue: "q", messageCount: 0, consumerCount: 0))) == .ready)
        #expect(c.isReady)
        var none = AMQPChannelStateMachine(id: 5, declarations: [])
        _ = none.open()
        _ = none.received(.method(.channelOpenOk))
        #expect(none.received(.method(.confirmSelectOk)) == .ready, "declare: false")
    }

    @Test func refusedDeclarationClosesTheChannelWithTheBrokersText() {
        var c = AMQPChannelStateMachine(id: 1, declarations: [Self.declare])
        _ = c.open()
        _ = c.received(.method(.channelOpenOk))
        _ = c.received(.method(.confirmSelectOk))
        let text =
            "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'q' in vhost '/': received 'true' but current is 'false'"
        #expect(
            c.received(.method(.channelClose(replyCode: 406, replyText: text, classID: 50, methodID: 10)))
                == .closed(
                    code: 406, text: text, classID: 50, methodID: 10,
                    send: [AMQPFrame(channel: 1, .method(.channelCloseOk))]))
    }

    typealias Token = AMQPChannelStateMachine.Token

    @Test func acksNacksAndMultipleResolveEachTagOnce() {
        var c = Self.readyChannel()
        let first = c.published((0..<5).map { (Token(batch: 1, index: $0), "m\($0)") })
        #expect(first == 1)
        #expect(
            c.received(.method(.basicAck(deliveryTag: 2, multiple: false)))
                == .resolved([(Token(batch: 1, index: 1), .acked)]))
        #expect(
            c.received(.method(.basicAck(deliveryTag: 3, multiple: true)))
                == .resolved([(Token(batch: 1, index: 0), .acked), (Token(batch: 1, index: 2), .acked)]),
            "tag 2 was already resolved")
        #expect(
            c.received(.method(.basicNack(deliveryTag: 4, multiple: false, requeue: true)))
                == .resolved([(Token(batch: 1, index: 3), .nacked)]))
        #expect(
            c.received(.method(.basicAck(deliveryTag: 3, multiple: false))) == .none, "a repeated ack resolves nothing")
        #expect(c.unresolved == 1)
        let next = c.published([(Token(batch: 2, index: 0), "n0")])
        #expect(next == 6)
        #expect(
            c.received(.method(.basicAck(deliveryTag: 6, multiple: true)))
                == .resolved([(Token(batch: 1, index: 4), .acked), (Token(batch: 2, index: 0), .acked)]))
        #expect(c.unresolved == 0)
    }

    @Test func aReturnBeforeTheAckMakesTheMessageUnroutable() {
        var c = Self.readyChannel()
        _ = c.published([(Token(batch: 1, index: 0), "a"), (Token(batch: 1, index: 1), "b")])
        #expect(
            c.received(.method(.basicReturn(replyCode: 312, replyText: "NO_ROUTE", exchange: "x", routingKey: "k")))
                == .none)
        var p = AMQPProperties()
        p.messageID = "b"
        #expect(c.received(.header(classID: 60, bodySize: 5, properties: p)) == .none)
        #expect(c.received(.body(Array("hel".utf8))) == .none)
        #expect(c.received(.body(Array("lo".utf8))) == .none)
        #expect(
            c.received(.method(.basicAck(deliveryTag: 2, multiple: true)))
                == .resolved([
                    (Token(batch: 1, index: 0), .acked),
                    (Token(batch: 1, index: 1), .returned(code: 312, text: "NO_ROUTE")),
                ]))
    }

    @Test func unexpectedFramesCloseTheChannel() {
        var c = Self.readyChannel()
        guard case .closed(505, _, _, _, _) = c.received(.body([1])) else {
            Issue.record("a body frame without basic.return is a violation")
            return
        }
    }

    @Test func brokerAddressesParse() throws {
        let a = try AMQPBrokerAddress(url: "amqp://guest:guest@127.0.0.1:5672/%2f")
        #expect(a.host == "127.0.0.1" && a.port == 5672 && a.virtualHost == "/" && a.user == "guest" && !a.tls)
        let b = try AMQPBrokerAddress(url: "amqps://app:p%40ss@rabbit.example.com/billing")
        #expect(b.tls && b.port == 5671 && b.password == "p@ss" && b.virtualHost == "billing")
        #expect(b.description == "amqps://app@rabbit.example.com:5671/billing", "the password is never shown")
        let c = try AMQPBrokerAddress(url: "amqp://host")
        #expect(c.virtualHost == "/" && c.user == "guest")
        #expect(throws: AMQPProtocolError.self) { try AMQPBrokerAddress(url: "amqp://u:secret@host:99999/") }
        do {
            _ = try AMQPBrokerAddress(url: "amqp://u:secret@host:bad/")
        } catch {
            #expect(!error.description.contains("secret"))
        }
    }
}
