import Foundation
import Testing
import SinkdCore
import SinkdDelivery
@testable import SinkdNATSSink
import NIOCore
import NIOTestUtils

/// The NATS protocol without a server: byte fixtures for every server operation and every
/// command sinkd sends, reads split at every offset, the connection state machine, NKeys.
@Suite struct NATSProtocolTests {
    /// The channel decoder on every fixture, in every split NIO's verifier tries.
    @Test func theChannelDecoderHandlesEverySplit() throws {
        try ByteToMessageDecoderVerifier.verifyDecoder(stringInputOutputPairs: Self.fixtures.map { ($0.0, [$0.1]) }) {
            NATSDecoder(parser: NATSParser())
        }
    }

    static let fixtures: [(String, NATSServerOp)] = [
        ("PING\r\n", .ping),
        ("PONG\r\n", .pong),
        ("pong\r\n", .pong),
        ("+OK\r\n", .ok),
        ("-ERR 'Authorization Violation'\r\n", .err("Authorization Violation")),
        ("-ERR 'Permissions Violation for Publish to \"x\"'\r\n", .err("Permissions Violation for Publish to \"x\"")),
        (
            "MSG orders.created 1 5\r\nhello\r\n",
            .message(subject: "orders.created", sid: "1", replyTo: nil, headers: nil, payload: Array("hello".utf8))
        ),
        (
            "MSG _INBOX.a.3.7 1 reply.to 0\r\n\r\n",
            .message(subject: "_INBOX.a.3.7", sid: "1", replyTo: "reply.to", headers: nil, payload: [])
        ),
        (
            "HMSG _INBOX.a.1.0 1 16 16\r\nNATS/1.0 503\r\n\r\n\r\n",
            .message(
                subject: "_INBOX.a.1.0", sid: "1", replyTo: nil, headers: Array("NATS/1.0 503\r\n\r\n".utf8),
                payload: [])
        ),
        (
            "HMSG s 9 r 12 14\r\nNATS/1.0\r\n\r\nhi\r\n",
            .message(
                subject: "s", sid: "9", replyTo: "r", headers: Array("NATS/1.0\r\n\r\n".utf8), payload: Array("hi".utf8)
            )
        ),
        (
            "MSG s 1 4\r\na\r\nb\r\n",
            .message(subject: "s", sid: "1", replyTo: nil, headers: nil, payload: Array("a\r\nb".utf8))
        ),
    ]

    @Test(arguments: 0..<fixtures.count) func parsesEachServerOperation(_ i: Int) throws {
        let (text, expected) = Self.fixtures[i]
        let bytes = Array(text.utf8)
        let parsed = try bytes.withUnsafeBytes { try NATSParser().parse($0) }
        #expect(parsed?.0 == expected)
        #expect(parsed?.1 == bytes.count, "consumes exactly the operation")
        // Every strict prefix asks for more bytes and consumes nothing.
        for cut in 0..<bytes.count {
            let prefix = Array(bytes[0..<cut])
            #expect(
                try prefix.withUnsafeBytes { try NATSParser().parse($0) } == nil,
                "prefix of \(cut) bytes of \(text.debugDescription)")
        }
    }

    @Test func parsesINFO() throws {
        let text =
            #"INFO {"server_id":"NABC","version":"2.9.10","headers":true,"max_payload":1048576,"nonce":"xyz","connect_urls":["10.0.0.2:4222","10.0.0.3:4222"],"ldm":true,"jetstream":true,"tls_required":false}"#
            + "\r\n"
        let bytes = Array(text.utf8)
        guard case (.info(let info), let used)? = try bytes.withUnsafeBytes({ try NATSParser().parse($0) }) else {
            Issue.record("not INFO")
            return
        }
        #expect(used == bytes.count)
        #expect(info.serverID == "NABC")
        #expect(info.maxPayload == 1_048_576)
        #expect(info.headers && info.jetStream && info.lameDuckMode && !info.tlsRequired)
        #expect(info.nonce == "xyz")
        #expect(info.connectURLs == ["10.0.0.2:4222", "10.0.0.3:4222"])
    }

    @Test func consecutiveOperationsInOneReadParseOneByOne() throws {
        let bytes = Array("PING\r\nMSG a 1 2\r\nhi\r\n+OK\r\n".utf8)
        var offset = 0
        var ops: [NATSServerOp] = []
        while offset < bytes.count,
            let (op, used) = try bytes[offset...].withUnsafeBytes({ try NATSParser().parse($0) })
        {
            ops.append(op)
            offset += used
        }
        #expect(
            ops == [
                .ping, .message(subject: "a", sid: "1", replyTo: nil, headers: nil, payload: Array("hi".utf8)), .ok,
            ])
    }

    @Test(arguments: [
        "FOO bar\r\n",
        "MSG a 1\r\n",
        "MSG a 1 x\r\n",
        "HMSG a 1 20 10\r\n",
        "MSG a 1 2\r\nhiXX",
        "INFO not-json\r\n",
    ])
    func rejectsMalformedOperations(_ text: String) {
        let bytes = Array(text.utf8)
        #expect(throws: NATSProtocolError.self) { try bytes.withUnsafeBytes { try NATSParser().parse($0) } }
    }

    @Test func boundsWhatItBuffers() {
        let parser = NATSParser(maxControlLine: 64, maxMessage: 100)
        let longLine = Array(("INFO " + String(repeating: "x", count: 100)).utf8)
        #expect(throws: NATSProtocolError.self) { try longLine.withUnsafeBytes { try parser.parse($0) } }
        let huge = Array("MSG a 1 101\r\n".utf8)
        #expect(throws: NATSProtocolError.self) { try huge.withUnsafeBytes { try parser.parse($0) } }
    }

    @Test func encodesCommands() {
        var out: [UInt8] = []
        NATSEncoder.pub(subject: Array("orders".utf8), payload: Array("{}".utf8), into: &out)
        #expect(String(decoding: out, as: UTF8.self) == "PUB orders 2\r\n{}\r\n")
        out = []
        let headers = NATSEncoder.messageIDHeaders("id-1")
        #expect(String(decoding: headers, as: UTF8.self) == "NATS/1.0\r\nNats-Msg-Id: id-1\r\n\r\n")
        NATSEncoder.hpub(
            subject: Array("audit".utf8), replyTo: Array("_INBOX.x.1.0".utf8), headers: headers,
            payload: Array("{}".utf8), into: &out)
        #expect(
            String(decoding: out, as: UTF8.self)
                == "HPUB audit _INBOX.x.1.0 31 33\r\nNATS/1.0\r\nNats-Msg-Id: id-1\r\n\r\n{}\r\n")
        out = []
        NATSEncoder.sub(subject: "_INBOX.x.>", sid: "1", into: &out)
        #expect(String(decoding: out, as: UTF8.self) == "SUB _INBOX.x.> 1\r\n")
        out = []
        NATSEncoder.pub(subject: Array("s".utf8), payload: [UInt8](repeating: 65, count: 1234), into: &out)
        #expect(String(decoding: out.prefix(11), as: UTF8.self) == "PUB s 1234\r")
    }

    @Test func connectCarriesTheCredentialsAsJSON() throws {
        var options = NATSConnectOptions()
        options.version = "0.1.0"
        options.user = "ann"
        options.password = #"p"w"#
        let json = try #require(try JSONSerialization.jsonObject(with: Data(options.json.utf8)) as? [String: Any])
        #expect(json["user"] as? String == "ann")
        #expect(json["pass"] as? String == #"p"w"#)
        #expect(json["verbose"] as? Bool == false)
        #expect(json["headers"] as? Bool == true)
        #expect(json["no_responders"] as? Bool == true)
        #expect(json["auth_token"] == nil && json["sig"] == nil)
    }

    // MARK: State machine

    static func info(tlsRequired: Bool = false, tlsAvailable: Bool = false, ldm: Bool = false) -> NATSServerInfo {
        var info = NATSServerInfo()
        info.serverID = "S"
        info.tlsRequired = tlsRequired
        info.tlsAvailable = tlsAvailable
        info.lameDuckMode = ldm
        return info
    }

    @Test func handshakeSendsConnectAfterINFOAndIsReadyAtThePONG() {
        var m = NATSConnectionStateMachine(tlsWanted: false)
        #expect(m.received(.ping) == .sendPong)
        #expect(m.received(.info(Self.info())) == .sendConnect(Self.info()))
        #expect(!m.isReady)
        #expect(m.received(.ok) == NATSConnectionStateMachine.Action.none)
        #expect(m.received(.pong) == .connected(Self.info()))
        #expect(m.isReady)
    }

    @Test func tlsIsNegotiatedBeforeCONNECT() {
        var m = NATSConnectionStateMachine(tlsWanted: true)
        #expect(m.received(.info(Self.info(tlsRequired: true))) == .startTLS)
        #expect(m.tlsEstablished() == .sendConnect(Self.info(tlsRequired: true)))
        // A server that requires TLS gets it even when the configuration did not ask.
        var n = NATSConnectionStateMachine(tlsWanted: false)
        #expect(n.received(.info(Self.info(tlsRequired: true))) == .startTLS)
        // TLS wanted but not offered: a clear failure.
        var o = NATSConnectionStateMachine(tlsWanted: true)
        guard case .close(.tlsMismatch)? = Optional(o.received(.info(Self.info()))) else {
            Issue.record("expected a TLS mismatch")
            return
        }
    }

    @Test func refusedCredentialsAreAnAuthorizationFailure() {
        var m = NATSConnectionStateMachine(tlsWanted: false)
        _ = m.received(.info(Self.info()))
        #expect(m.received(.err("Authorization Violation")) == .close(.authorization("Authorization Violation")))
        #expect(m.received(.pong) == NATSConnectionStateMachine.Action.none, "closed stays closed")
    }

    @Test func anythingButINFOFirstIsAProtocolViolation() {
        var m = NATSConnectionStateMachine(tlsWanted: false)
        guard case .close(.protocolViolation)? = Optional(m.received(.pong)) else {
            Issue.record("expected a protocol violation")
            return
        }
    }

    @Test func pongsAnswerPingsInOrderAndCarryNonFatalErrors() {
        var m = NATSConnectionStateMachine(tlsWanted: false)
        _ = m.received(.info(Self.info()))
        _ = m.received(.pong)
        m.pingSent()
        m.pingSent()
        #expect(
            m.received(.err("Permissions Violation for Publish to \"secret\""))
                == NATSConnectionStateMachine.Action.none)
        #expect(m.received(.pong) == .pingAnswered(error: "Permissions Violation for Publish to \"secret\""))
        #expect(m.received(.pong) == .pingAnswered(error: nil), "the error belongs to one batch only")
        #expect(m.received(.pong) == NATSConnectionStateMachine.Action.none, "a PONG nobody asked for")
        #expect(m.outstandingPings == 0)
    }

    @Test func fatalErrorsCloseAndLaterINFOsAreReported() {
        var m = NATSConnectionStateMachine(tlsWanted: false)
        _ = m.received(.info(Self.info()))
        _ = m.received(.pong)
        #expect(m.received(.info(Self.info(ldm: true))) == .infoUpdated(Self.info(ldm: true)))
        let reply = NATSServerOp.message(subject: "_INBOX.a.1.0", sid: "1", replyTo: nil, headers: nil, payload: [1])
        #expect(m.received(reply) == .reply(subject: "_INBOX.a.1.0", headers: nil, payload: [1]))
        #expect(m.received(.err("Stale Connection")) == .close(.server("Stale Connection")))
    }

    @Test func replySubjectsMapToBatchAndIndex() {
        #expect(NATSClientHandler.token("_INBOX.abc.12.3", inbox: "_INBOX.abc")! == (12, 3))
        #expect(NATSClientHandler.token("_INBOX.other.12.3", inbox: "_INBOX.abc") == nil)
        #expect(NATSClientHandler.token("_INBOX.abc.12", inbox: "_INBOX.abc") == nil)
    }

    // MARK: JetStream replies

    @Test func pubAcksMapToOutcomes() {
        func reply(_ json: String, headers: String? = nil) -> NATSReply {
            NATSReply(headers: headers.map { Array($0.utf8) }, payload: Array(json.utf8))
        }
        #expect(
            JetStreamPubAck.outcome(reply(#"{"stream":"S","seq":4}"#), timeout: .seconds(10)) == .outcome(.delivered))
        #expect(
            JetStreamPubAck.outcome(reply(#"{"stream":"S","seq":4,"duplicate":true}"#), timeout: .seconds(10))
                == .outcome(.delivered))
        #expect(JetStreamPubAck.outcome(reply("", headers: "NATS/1.0 503\r\n\r\n"), timeout: .seconds(10)) == .noStream)
        #expect(
            JetStreamPubAck.outcome(
                reply(#"{"error":{"code":503,"err_code":10039,"description":"jetstream not enabled"}}"#),
                timeout: .seconds(10)) == .noStream)
        #expect(
            JetStreamPubAck.outcome(
                reply(#"{"error":{"code":400,"err_code":10054,"description":"message size exceeds maximum allowed"}}"#),
                timeout: .seconds(10))
                == .outcome(
                    .permanent("nats JetStream: message size exceeds maximum allowed (code 400, err_code 10054)")))
        #expect(
            JetStreamPubAck.outcome(
                reply(#"{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}"#),
                timeout: .seconds(10))
                == .outcome(.retryable("nats JetStream: maximum messages exceeded (code 503, err_code 10077)")))
        #expect(
            JetStreamPubAck.outcome(
                reply(#"{"error":{"code":500,"err_code":10047,"description":"insufficient resources"}}"#),
                timeout: .seconds(10))
                == .outcome(.retryable("nats JetStream: insufficient resources (code 500, err_code 10047)")))
        #expect(
            JetStreamPubAck.outcome(nil, timeout: .seconds(10))
                == .outcome(.retryable("nats: no JetStream PubAck within 10 s")))
    }

    @Test(arguments: [
        ("orders", "ORDERS"),
        ("conductor_jsm_notify_test_audit", "CONDUCTOR_JSM_NOTIFY_TEST_AUDIT"),
        ("a.b.c", "A_B_C"),
        ("events.*", "EVENTS_ANY"),
        ("events.>", "EVENTS_ALL"),
    ])
    func streamNamesAreDerivedAsConductorDoes(_ subject: String, _ name: String) {
        #expect(JetStreamPubAck.streamName(for: subject) == name)
    }

    // MARK: Servers

    @Test func serverAddressesParse() throws {
        let plain = try NATSServerAddress(parsing: "nats://10.0.0.1:4333")
        #expect(plain.host == "10.0.0.1" && plain.port == 4333 && !plain.tls)
        let auth = try NATSServerAddress(parsing: "nats://ann:secret@host")
        #expect(auth.user == "ann" && auth.password == "secret" && auth.port == 4222)
        let token = try NATSServerAddress(parsing: "nats://s3cr3t@host:1")
        #expect(token.token == "s3cr3t" && token.user == nil)
        let tls = try NATSServerAddress(parsing: "tls://nats.example.com")
        #expect(tls.tls && tls.host == "nats.example.com")
        let bare = try NATSServerAddress(parsing: "[::1]:4222")
        #expect(bare.host == "::1" && bare.port == 4222)
        #expect(throws: SinkConnectionError.self) { try NATSServerAddress(parsing: "nats://host:notaport") }
        #expect(throws: SinkConnectionError.self) { try NATSServerAddress(parsing: "nats://:4222") }
    }

    @Test func serverListRotatesAfterTheLastUsedAndLearnsClusterMembers() throws {
        let list = NATSServerList([
            try NATSServerAddress(parsing: "nats://a:1"), try NATSServerAddress(parsing: "nats://b:2"),
        ])
        #expect(list.rotation().map(\.host) == ["a", "b"])
        list.used(try NATSServerAddress(parsing: "nats://a:1"))
        #expect(list.rotation().map(\.host) == ["b", "a"], "the server used last is tried last")
        list.discovered(["c:3", "a:1", "b:2"], tls: false)
        #expect(list.servers.map(\.host) == ["a", "b", "c"])
    }

    // MARK: NKeys

    /// Made with PyPI nkeys 0.2.1: `nkeys.encode_seed(bytes(range(32)), PREFIX_BYTE_USER)`, its
    /// public key, and `sign(b"nonce-1234")` base64url-encoded without padding.
    static let seed = "SUAAAAICAMCAKBQHBAEQUCYMBUHA6EARCIJRIFIWC4MBSGQ3DQOR4H776Y"
    static let publicKey = "UAB2CB576PHBBPQ5ODORRZ2LYCMWPZGWGCN2KDK7DXOIMZASKUY3RLKK"
    static let signature = "IJcLK9yIHQTZlR2XBJPxQPosivRSOP0_FYnR-7VmHeUGJxapG-u8Mhph3Q9a-MPmBeNCA9OAtiHB5Mi29BvpBg"

    @Test func nkeySeedGivesThePublicKeyAndSignsTheNonceAsTheReferenceLibrary() throws {
        let pair = try NKeyPair(seed: Self.seed)
        #expect(pair.type == .user)
        #expect(pair.publicKey == Self.publicKey)
        #expect(try pair.sign(nonce: "nonce-1234") == Self.signature)
    }

    @Test func badSeedsAreRefusedWithoutEchoingThem() {
        var mistyped = Array(Self.seed)
        mistyped[20] = mistyped[20] == "A" ? "B" : "A"
        #expect(throws: NKeyError("the NKey's checksum does not match (mistyped or truncated)")) {
            try NKeyPair(seed: String(mistyped))
        }
        #expect(throws: NKeyError("an NKey is base32 text (A-Z, 2-7)")) { try NKeyPair(seed: "not-a-seed!") }
        #expect(throws: NKeyError("not an NKey seed (seeds start with 'S')")) { try NKeyPair(seed: Self.publicKey) }
    }

    @Test func credentialsFilesYieldTheJWTAndTheSeed() throws {
        let text = """
            -----BEGIN NATS USER JWT-----
            eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.eyJzdWIiOiJVQUIifQ.c2ln
            ------END NATS USER JWT------

            ************************* IMPORTANT *************************
            NKEY Seed printed below can be used to sign and prove identity.

            -----BEGIN USER NKEY SEED-----
            \(Self.seed)
            ------END USER NKEY SEED------

            *************************************************************
            """
        let credentials = try NATSCredentials(text: text, path: "user.creds")
        #expect(credentials.jwt == "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.eyJzdWIiOiJVQUIifQ.c2ln")
        #expect(credentials.seed == Self.seed)
        #expect(throws: NKeyError.self) { try NATSCredentials(text: "just text", path: "x.creds") }
    }

    @Test func limitsCountMessagesNotBatches() {
        var options = ConfigFamily.nats.defaultOptions
        options.batchSize = 100
        options.maxInFlight = 256
        let limits = SinkLimits.messageWindow(options, maxBatchBytes: 1 << 20, maxMessageBytes: 1 << 20)
        #expect(limits.maxBatchCount == 100)
        #expect(limits.maxBatchesInFlight == 2, "at most 256 messages unacknowledged: two batches of 100")
        options.maxInFlight = 10
        let small = SinkLimits.messageWindow(options, maxBatchBytes: 1 << 20, maxMessageBytes: 1 << 20)
        #expect(small.maxBatchCount == 10 && small.maxBatchesInFlight == 1)
    }
}
