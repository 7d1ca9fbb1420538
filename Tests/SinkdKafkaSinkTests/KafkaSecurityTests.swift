import Foundation
import Testing
import SinkdCore
import SinkdDelivery
import SinkdIngest
import SinkdTestSupport
@testable import SinkdKafkaSink
import SinkdTestServers

/// SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) and TLS. The exchanges as plain values first
/// (RFC 7677's vector, the scramp library's, kafka-python's encoder, hostile answers), then end to
/// end against Tansu behind Fixtures/gate_proxy.py: Tansu 0.6.0 cannot serve either itself here
/// (its --cert and --key options exclude each other, and SASL users can only be created over an
/// authenticated connection, which its memory storage never has), so the proxy plays Kafka's
/// listener (TLS by OpenSSL, SCRAM by scramp's server) in front of the real broker.
@Suite(.blockingThreads) struct KafkaSaslExchangeTests {
    static let vectorScript = Python.fixtures.appendingPathComponent("scram_vector.py").path

    /// RFC 7677 section 3: user "user", password "pencil".
    @Test func scramSHA256FollowsRFC7677() throws {
        var client = KafkaSaslAuthenticator(
            KafkaSASLConfig(mechanism: .scramSHA256, username: "user", password: "pencil"),
            nonce: "rOprNGfwEbeRWgbNEkqO")
        #expect(String(decoding: client.start(), as: UTF8.self) == "n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
        let final = try client.next(
            Array("r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096".utf8))
        #expect(
            final.map { String(decoding: $0, as: UTF8.self) }
                == "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        )
        #expect(
            try client.next(Array("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".utf8)) == nil,
            "the server's signature is verified")
    }

    /// The same exchange as the scramp library computes it (client and server), for both
    /// mechanisms, with a user name that needs RFC 5802's escaping.
    @Test(arguments: [KafkaSASLConfig.Mechanism.scramSHA256, .scramSHA512])
    func scramMatchesAnIndependentImplementation(mechanism: KafkaSASLConfig.Mechanism) throws {
        let lines = try Python.run([
            Self.vectorScript, mechanism.rawValue, "al=ice,x", "pässword", "cnonce123", "snonce456",
            "00112233445566778899aabb", "4096",
        ])
        .split(separator: "\n").map(String.init)
        try #require(lines.count == 4)
        var client = KafkaSaslAuthenticator(
            KafkaSASLConfig(mechanism: mechanism, username: "al=ice,x", password: "pässword"), nonce: "cnonce123")
        #expect(String(decoding: client.start(), as: UTF8.self) == lines[0])
        #expect(try client.next(Array(lines[1].utf8)).map { String(decoding: $0, as: UTF8.self) } == lines[2])
        #expect(try client.next(Array(lines[3].utf8)) == nil)
    }

    @Test func plainSendsTheAuthorizationlessToken() throws {
        var client = KafkaSaslAuthenticator(KafkaSASLConfig(mechanism: .plain, username: "alice", password: "s3cret"))
        #expect(client.start() == [0] + Array("alice".utf8) + [0] + Array("s3cret".utf8))
        #expect(try client.next([]) == nil)
        #expect(throws: KafkaSaslAuthenticator.Failure.self) { try client.next([]) }
    }

    /// What a hostile or broken broker may answer: each is an error that says what was wrong,
    /// never a trap, never a proof sent to a broker that did not follow the protocol.
    @Test(arguments: [
        ("r=someoneelse,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", "nonce does not extend"),
        ("r=abc,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", "nonce does not extend"),
        ("r=abcdef,i=4096", "no valid salt"),
        ("r=abcdef,s=!!notbase64,i=4096", "no valid salt"),
        ("r=abcdef,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1", "iteration count 1 is outside"),
        ("r=abcdef,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=999999999999", "iteration count"),
        ("r=abcdef,s=W22ZaJ0SNY7soEsUEjb6gQ==", "iteration count (none)"),
        ("e=unknown-user", "refused the SCRAM exchange: unknown-user"),
        ("", "nonce does not extend"),
    ])
    func hostileServerFirstMessagesAreRefused(message: String, expected: String) {
        var client = KafkaSaslAuthenticator(
            KafkaSASLConfig(mechanism: .scramSHA512, username: "u", password: "p"), nonce: "abc")
        _ = client.start()
        let error = #expect(throws: KafkaSaslAuthenticator.Failure.self) { try client.next(Array(message.utf8)) }
        #expect(error?.description.contains(expected) == true, "\(error?.description ?? "")")
    }

    @Test func aWrongServerSignatureIsRefused() throws {
        for final in ["v=AAAA", "e=invalid-proof", "", "v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="] {
            var client = KafkaSaslAuthenticator(
                KafkaSASLConfig(mechanism: .scramSHA256, username: "user", password: "pencil"),
                nonce: "rOprNGfwEbeRWgbNEkqO")
            _ = client.start()
            _ = try client.next(
                Array("r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096".utf8))
            #expect(throws: KafkaSaslAuthenticator.Failure.self, "\(final)") { try client.next(Array(final.utf8)) }
        }
    }

    @Test func handshakeAndAuthenticateAreKafkas() throws {
        #expect(
            KafkaSaslHandshake.request(correlationID: 7, clientID: "sinkd", mechanism: "SCRAM-SHA-512")
                == (try KafkaMessagesTests.python(["sasl-handshake-request", "1", "7", "sinkd", "SCRAM-SHA-512"])))
        for version in Int16(0)...1 {
            #expect(
                KafkaSaslAuthenticate.request(
                    version: version, correlationID: 8, clientID: "sinkd", authBytes: Array("n,,".utf8))
                    == (try KafkaMessagesTests.python([
                        "sasl-authenticate-request", "\(version)", "8", "sinkd", "6e2c2c",
                    ])))
        }
        let handshake = Array(
            try KafkaMessagesTests.python(["sasl-handshake-response", "1", "7", "33", "PLAIN", "SCRAM-SHA-256"]))
        #expect(
            try KafkaSaslHandshake.response(handshake) == .init(errorCode: 33, mechanisms: ["PLAIN", "SCRAM-SHA-256"]))
        let refused = Array(
            try KafkaMessagesTests.python(["sasl-authenticate-response", "1", "8", "58", "bad creds", "", "0"]))
        #expect(
            try KafkaSaslAuthenticate.response(refused, version: 1)
                == .init(errorCode: 58, errorMessage: "bad creds", authBytes: [], sessionLifetimeMillis: 0))
        let v1 = Array(
            try KafkaMessagesTests.python(["sasl-authenticate-response", "1", "8", "0", "", "0a0b", "3600000"]))
        #expect(
            try KafkaSaslAuthenticate.response(v1, version: 1)
                == .init(errorCode: 0, errorMessage: nil, authBytes: [10, 11], sessionLifetimeMillis: 3_600_000))
        for cut in 0..<v1.count {
            #expect(throws: KafkaReader.Truncated.self) {
                try KafkaSaslAuthenticate.response(Array(v1.prefix(cut)), version: 1)
            }
        }
        for cut in 0..<handshake.count {
            #expect(throws: KafkaReader.Truncated.self) {
                try KafkaSaslHandshake.response(Array(handshake.prefix(cut)))
            }
        }
    }
}

@Suite(.serialized, .blockingThreads) struct KafkaSecurityTests {
    static func batch(_ sink: String, _ range: Range<Int>) -> [SequencedRecord] {
        KafkaTansuTests.records(sink, range).enumerated().map {
            SequencedRecord(seq: UInt64($0.offset + 1), record: $0.element)
        }
    }

    /// A broker behind the gate proxy; the topic made after the proxy listens (metadata names it).
    static func gated(_ arguments: [String], topic: String, partitions: Int) throws -> (TansuServer, Process, String) {
        let broker = try TansuServer(advertisedPort: LoopbackTCP.freePort())
        let events = FileManager.default.temporaryDirectory.appendingPathComponent("sinkd-gate-\(UUID().uuidString)")
            .path
        let proxy = try broker.startProxy("gate_proxy.py", arguments, output: events)
        try broker.createTopic(topic, partitions: partitions)
        return (broker, proxy, events)
    }

    static func events(_ path: String) -> [String] {
        (try? String(contentsOfFile: path, encoding: .utf8))?.split(separator: "\n").map(String.init) ?? []
    }

    static func peerSettings(_ mechanism: KafkaSASLConfig.Mechanism, tls: TestCertificates?) -> String {
        var settings = [
            "security.protocol": tls == nil ? "SASL_PLAINTEXT" : "SASL_SSL", "sasl.mechanism": mechanism.rawValue,
            "sasl.username": "alice", "sasl.password": "s3cret",
        ]
        if let tls { settings["ssl.ca.location"] = tls.caFile }
        return String(decoding: try! JSONSerialization.data(withJSONObject: settings), as: UTF8.self)
    }

    static func certificates() throws -> TestCertificates {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "sinkd-kafka-tls-\(UUID().uuidString)"
        ).path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return try TestCertificates(in: directory)
    }

    /// Each mechanism authenticates and delivers; SCRAM-SHA-512 and PLAIN also over TLS (SASL_SSL,
    /// the certificate verified against ca_file), read back by librdkafka through the same listener.
    @Test(arguments: [(KafkaSASLConfig.Mechanism.scramSHA512, true), (.scramSHA256, false), (.plain, true)])
    func saslAuthenticatesAndDelivers(mechanism: KafkaSASLConfig.Mechanism, overTLS: Bool) async throws {
        let certificates = overTLS ? try Self.certificates() : nil
        let tlsArguments = certificates.map { ["--tls", $0.certificateFile, $0.keyFile] } ?? []
        let (broker, proxy, events) = try Self.gated(
            ["--sasl", "alice", "s3cret"] + tlsArguments, topic: "secure", partitions: 2)
        defer { TansuServer.kill(proxy) }
        var kafka = KafkaSinkConfig()
        kafka.bootstrapServers = ["127.0.0.1:\(broker.advertisedPort)"]
        kafka.sasl = KafkaSASLConfig(mechanism: mechanism, username: "alice", password: "s3cret")
        if let certificates { kafka.tls = TLSConfig(caFile: certificates.caFile) }
        let family = KafkaSinkFamily(config: kafka)
        let client = try family.makeClient(for: try SinkAddress.parse(identity: "kafka:secure"), options: kafka.options)
        let sent = Self.batch("kafka:secure", 0..<40)
        #expect(try await client.send(sent) == Array(repeating: .delivered, count: 40))
        let got = try KafkaTansuTests.consume(
            broker, topic: "secure", partitions: 2, count: 40, timeout: 20,
            settings: Self.peerSettings(mechanism, tls: certificates))
        #expect(Set(got.compactMap(\.key)) == Set(sent.map(\.record.id)))
        #expect(got.count == 40)
        #expect(Self.events(events).contains("authenticated alice \(mechanism.rawValue)"))
        await family.shutdown()
    }

    /// A wrong password pauses the sink with the broker's reason (never a dead letter); so does a
    /// mechanism the listener does not offer, naming the ones it does.
    @Test func refusedAuthenticationPausesTheSink() async throws {
        let (broker, proxy, _) = try Self.gated(
            ["--sasl", "alice", "s3cret", "--mechanisms", "SCRAM-SHA-256"], topic: "secure", partitions: 1)
        defer { TansuServer.kill(proxy) }
        for (mechanism, password, expected) in [
            (KafkaSASLConfig.Mechanism.scramSHA256, "Hunter2-secret", "SASL_AUTHENTICATION_FAILED"),
            (.plain, "s3cret", "it offers SCRAM-SHA-256"),
        ] {
            var kafka = KafkaSinkConfig()
            kafka.bootstrapServers = ["127.0.0.1:\(broker.advertisedPort)"]
            kafka.sasl = KafkaSASLConfig(mechanism: mechanism, username: "alice", password: password)
            let family = KafkaSinkFamily(config: kafka)
            let client = try family.makeClient(
                for: try SinkAddress.parse(identity: "kafka:secure"), options: kafka.options)
            let error = await #expect(throws: SinkConnectionError.self) {
                try await client.send(Self.batch("kafka:secure", 0..<3))
            }
            #expect(error?.message.contains(expected) == true, "\(error?.message ?? "")")
            #expect(error?.message.contains(password) == false, "the password is never in the message")
            await family.shutdown()
        }
        #expect(
            try KafkaTansuTests.consume(
                broker, topic: "secure", partitions: 1, count: 1, timeout: 3,
                settings: Self.peerSettings(.scramSHA256, tls: nil)
            ).isEmpty)
    }

    /// A certificate the configured CA did not sign, and a plaintext client at a TLS listener:
    /// both pause the sink with a message that points at sinks.kafka.tls.
    @Test func tlsFailuresPauseTheSinkAndSaySo() async throws {
        let certificates = try Self.certificates()
        let other = try Self.certificates()
        let (broker, proxy, _) = try Self.gated(
            ["--tls", certificates.certificateFile, certificates.keyFile], topic: "secure", partitions: 1)
        defer { TansuServer.kill(proxy) }
        for tls in [TLSConfig(caFile: other.caFile), nil] {
            var kafka = KafkaSinkConfig()
            kafka.bootstrapServers = ["127.0.0.1:\(broker.advertisedPort)"]
            kafka.tls = tls
            kafka.requestTimeout = .seconds(2)
            let family = KafkaSinkFamily(config: kafka)
            let client = try family.makeClient(
                for: try SinkAddress.parse(identity: "kafka:secure"), options: kafka.options)
            let error = await #expect(throws: SinkConnectionError.self) {
                try await client.send(Self.batch("kafka:secure", 0..<3))
            }
            #expect(error?.message.contains("sinks.kafka.tls") == true, "\(error?.message ?? "")")
            await family.shutdown()
        }
    }

    /// A broker that ends authenticated sessions (SaslAuthenticate v1's session lifetime, KIP-368;
    /// the proxy closes a connection at its first request after the end): sinkd replaces each
    /// connection before its session ends, so no request meets an expired session, and every
    /// record is stored once.
    @Test func sessionsAreRenewedBeforeTheBrokerEndsThem() async throws {
        let (broker, proxy, events) = try Self.gated(
            ["--sasl", "alice", "s3cret", "--lifetime-ms", "1500"], topic: "renew", partitions: 1)
        defer { TansuServer.kill(proxy) }
        let (family, client) = try Self.saslClient(broker, .scramSHA512, topic: "renew")
        var sent = 0
        let clock = ContinuousClock()
        let end = clock.now + .seconds(4)
        while clock.now < end {
            #expect(
                try await client.send(
                    Self.batch("kafka:renew", sent..<(sent + 10)).map {
                        SequencedRecord(seq: $0.seq + UInt64(sent), record: $0.record)
                    }) == Array(repeating: .delivered, count: 10))
            sent += 10
            try await Task.sleep(for: .milliseconds(100))  // pacing the stream, not waiting for an outcome
        }
        let log = Self.events(events)
        #expect(!log.contains("expired"), "a request met an ended session: \(log)")
        #expect(log.filter { $0.hasPrefix("authenticated") }.count >= 3, "sessions were renewed: \(log)")
        let got = try KafkaTansuTests.consume(
            broker, topic: "renew", partitions: 1, count: sent, timeout: 20,
            settings: Self.peerSettings(.scramSHA512, tls: nil))
        #expect(got.count == sent)
        #expect(Set(got.compactMap(\.key)).count == sent)
        await family.shutdown()
    }

    /// A family logging in as alice through the gate proxy in front of `broker`, and its client for `topic`.
    static func saslClient(
        _ broker: TansuServer, _ mechanism: KafkaSASLConfig.Mechanism, topic: String
    ) throws -> (KafkaSinkFamily, any SinkClient) {
        var kafka = KafkaSinkConfig()
        kafka.bootstrapServers = ["127.0.0.1:\(broker.advertisedPort)"]
        kafka.sasl = KafkaSASLConfig(mechanism: mechanism, username: "alice", password: "s3cret")
        let family = KafkaSinkFamily(config: kafka)
        return (
            family,
            try family.makeClient(for: try SinkAddress.parse(identity: "kafka:\(topic)"), options: kafka.options)
        )
    }

    /// A hostile session lifetime (Int64.max milliseconds) is an answer like any other: it neither
    /// traps the arithmetic of the renewal time nor stops delivery.
    @Test func anAbsurdSessionLifetimeDoesNotTrap() async throws {
        let (broker, proxy, _) = try Self.gated(
            ["--sasl", "alice", "s3cret", "--lifetime-ms", "\(Int64.max)"], topic: "absurd", partitions: 1)
        defer { TansuServer.kill(proxy) }
        let (family, client) = try Self.saslClient(broker, .scramSHA256, topic: "absurd")
        #expect(try await client.send(Self.batch("kafka:absurd", 0..<5)) == Array(repeating: .delivered, count: 5))
        await family.shutdown()
    }
}
