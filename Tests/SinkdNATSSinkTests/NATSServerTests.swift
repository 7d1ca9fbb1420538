import Foundation
import Logging
import Testing
import SinkdCore
import SinkdDelivery
import SinkdIngest
import SinkdTestSupport
@testable import SinkdNATSSink
import SinkdTestServers

/// The NATS sinks against a real nats-server (with JetStream) on 127.0.0.1.
@Suite(.serialized, .blockingThreads) struct NATSServerTests {
    static func records(_ sink: String, _ range: Range<Int>, prefix: String = "r") -> [EventRecord] {
        range.map { EventRecord(id: "\(prefix)-\($0)", sink: sink, payload: Array(#"{"n":\#($0)}"#.utf8)) }
    }

    static func config(_ server: NATSServer, _ configure: (inout NATSSinkConfig) -> Void = { _ in }) -> NATSSinkConfig {
        var nats = NATSSinkConfig()
        nats.servers = [server.url]
        nats.jsmSubjectPrefix = ""  // the tests name their streams' subjects; the default has its own test
        nats.options.retry.initialBackoff = .milliseconds(20)
        nats.options.retry.maxBackoff = .milliseconds(200)
        configure(&nats)
        return nats
    }

    static func engine(_ nats: NATSSinkConfig, family: NATSSinkFamily? = nil) throws -> RunningEngine {
        try RunningEngine(families: [.nats: family ?? NATSSinkFamily(config: nats, ackTimeout: .seconds(3))]) {
            $0.sinks.nats = nats
        }
    }

    @Test func corePublishReachesASubscriber() async throws {
        let server = try NATSServer()
        let subscriber = try NATSSubscriber(port: server.port, subject: "alerts")
        let engine = try Self.engine(Self.config(server))
        await engine.append(Self.records("nats:alerts", 0..<500))
        // Conductor's `subject:queueGroup` form publishes to the subject.
        await engine.append(Self.records("nats:alerts:workers", 500..<510))
        let got = await subscriber.waitFor(count: 510)
        #expect(got.count == 510)
        #expect(Set(got) == Set((0..<510).map { #"{"n":\#($0)}"# }))
        #expect(await engine.waitForDelivered("nats:alerts", 500) == 500)
        await engine.stop()
    }

    /// Issue 20, item 9: with the default options (one connection, several batches in flight) and
    /// nothing failing, a core subscriber and a JetStream stream get the records in WAL order.
    @Test func firstAttemptsArriveInWALOrderWithSeveralBatchesInFlight() async throws {
        let server = try NATSServer()
        try await server.createStream("ORDERED", subjects: ["ordered.js"])
        let subscriber = try NATSSubscriber(port: server.port, subject: "ordered.core")
        let nats = Self.config(server) { $0.options.batchSize = 16 }  // many batches, so that an overtaking one shows
        #expect(
            nats.options.poolSize == 1 && nats.options.maxInFlight > nats.options.batchSize,
            "the defaults this is about: one connection, several batches")
        let engine = try Self.engine(nats)
        let total = 2000
        for chunk in 0..<(total / 100) {
            await engine.append(Self.records("nats:ordered.core", (chunk * 100)..<((chunk + 1) * 100)))
            await engine.append(Self.records("jsm:ordered.js", (chunk * 100)..<((chunk + 1) * 100)))
        }
        let core = await subscriber.waitFor(count: total)
        #expect(core.count == total)
        let coreOutOfOrder = core.indices.first { core[$0] != #"{"n":\#($0)}"# }
        #expect(
            coreOutOfOrder == nil,
            "core: message \(coreOutOfOrder ?? 0) is \(coreOutOfOrder.map { core[$0] } ?? ""), not record \(coreOutOfOrder ?? 0)"
        )
        #expect(try await server.waitForStream("ORDERED", count: total) == total)
        var firstOutOfOrder: Int?
        for seq in 1...total where firstOutOfOrder == nil {
            if try await server.streamMessage("ORDERED", seq: seq).data != #"{"n":\#(seq - 1)}"# {
                firstOutOfOrder = seq
            }
        }
        #expect(
            firstOutOfOrder == nil,
            "JetStream: stream sequence \(firstOutOfOrder ?? 0) is not record \((firstOutOfOrder ?? 1) - 1)")
        await engine.stop()
    }

    @Test func jetStreamPublishIsDeliveredAtThePubAckWithTheRecordIdAsNatsMsgId() async throws {
        let server = try NATSServer()
        try await server.createStream("AUDIT", subjects: ["audit"])
        let engine = try Self.engine(Self.config(server))
        await engine.append(Self.records("jsm:audit", 0..<300))
        #expect(try await server.waitForStream("AUDIT", count: 300) == 300)
        let first = try await server.streamMessage("AUDIT", seq: 1)
        #expect(first.data.hasPrefix(#"{"n":"#))
        #expect(first.headers.contains("Nats-Msg-Id: r-"))
        #expect(await engine.waitForDelivered("jsm:audit", 300) == 300)
        await engine.stop()
        #expect(try await server.streamCount("AUDIT") == 300, "nothing sent twice")
    }

    /// Issue 20, items 3 and 4: `jsm:subject:group` is accepted as Conductor accepts it, and with no
    /// configuration the subject gets Conductor's default prefix, where its consumers look.
    @Test func conductorsQueueGroupFormAndDefaultPrefixReachTheStreamConductorReads() async throws {
        let server = try NATSServer()
        try await server.createStream("CONDUCTOR_JSM_NOTIFY_TEST_AUDIT", subjects: ["conductor_jsm_notify_test_audit"])
        var nats = NATSSinkConfig()
        nats.servers = [server.url]
        #expect(nats.jsmSubjectPrefix == "conductor_jsm_notify_test_")
        let engine = try Self.engine(nats)
        let address = try SinkAddress.parse(identity: "jsm:audit:workers")
        #expect(address.target == .natsSubject("audit", queueGroup: "workers"))
        await engine.append(Self.records("jsm:audit", 0..<10) + Self.records("jsm:audit:workers", 10..<20))
        #expect(try await server.waitForStream("CONDUCTOR_JSM_NOTIFY_TEST_AUDIT", count: 20) == 20)
        #expect(await engine.waitForDelivered("jsm:audit:workers", 10) == 10)
        await engine.stop()
    }

    /// Issue 20, item 8: what Conductor publishes, sinkd publishes: `nats:orders..x` (a subject
    /// nats-server takes though nobody can subscribe to it: no error, the sink stays up) and `jsm:`
    /// alone (Conductor's prefix by itself as the subject).
    @Test func conductorsLenientSubjectsArePublishedAsConductorPublishesThem() async throws {
        let server = try NATSServer()
        try await server.createStream("BARE", subjects: ["conductor_jsm_notify_test_"])
        var nats = NATSSinkConfig()
        nats.servers = [server.url]
        let engine = try Self.engine(nats)
        await engine.append(Self.records("nats:orders..x", 0..<5) + Self.records("jsm:", 5..<8))
        #expect(await engine.waitForDelivered("nats:orders..x", 5) == 5)
        #expect(try await server.waitForStream("BARE", count: 3) == 3)
        #expect(await engine.waitForDelivered("jsm:", 3) == 3)
        await engine.stop()
    }

    @Test func theSameIdAcrossARestartOfSinkdIsStoredOnce() async throws {
        let server = try NATSServer()
        try await server.createStream("ORDERS", subjects: ["orders"])
        let nats = Self.config(server)
        for run in 0..<2 {
            // Each run is a fresh sinkd (its own WAL) sending the same ids.
            let engine = try Self.engine(nats)
            await engine.append(Self.records("jsm:orders", 0..<50, prefix: "same"))
            #expect(await engine.waitForDelivered("jsm:orders", 50) == 50, "run \(run): every record acknowledged")
            await engine.stop()
        }
        #expect(try await server.streamCount("ORDERS") == 50, "the stream deduplicated on Nats-Msg-Id")
    }

    @Test func withoutAStreamTheSinkPausesWithAClearErrorAndResumesOnceOneExists() async throws {
        let server = try NATSServer()
        let engine = try Self.engine(Self.config(server))
        await engine.append(Self.records("jsm:billing.paid", 0..<20))
        #expect(await engine.wait(for: "jsm:billing.paid", state: .down))
        let error = engine.snapshot(of: "jsm:billing.paid")?.lastError ?? ""
        #expect(error.contains("no JetStream stream captures subject 'billing.paid'"), "\(error)")
        #expect(error.contains("create_stream"))
        #expect(try engine.deadLetters.entries().isEmpty, "a missing stream dead-letters nothing")
        try await server.createStream("BILLING", subjects: ["billing.>"])
        #expect(try await server.waitForStream("BILLING", count: 20) == 20)
        await engine.stop()
    }

    @Test func createStreamMakesTheStreamNamedAsConductorDoes() async throws {
        let server = try NATSServer()
        let nats = Self.config(server) {
            $0.jsmCreateStream = true
            $0.jsmSubjectPrefix = "conductor_jsm_notify_test_"
        }
        let engine = try Self.engine(nats)
        await engine.append(Self.records("jsm:audit.events", 0..<40))
        #expect(try await server.waitForStream("CONDUCTOR_JSM_NOTIFY_TEST_AUDIT_EVENTS", count: 40) == 40)
        let message = try await server.streamMessage("CONDUCTOR_JSM_NOTIFY_TEST_AUDIT_EVENTS", seq: 1)
        #expect(message.data.hasPrefix(#"{"n":"#))
        await engine.stop()
    }

    @Test func natsStreamSinksArePublishedToJetStreamWithOneWarning() async throws {
        let server = try NATSServer()
        try await server.createStream("LEGACY", subjects: ["legacy"])
        let logs = CapturedLogs()
        let nats = Self.config(server)
        let family = NATSSinkFamily(config: nats, logger: logs.logger(), ackTimeout: .seconds(3))
        let engine = try Self.engine(nats, family: family)
        for chunk in 0..<3 {
            await engine.append(Self.records("nats_stream:legacy", (chunk * 10)..<((chunk + 1) * 10)))
        }
        #expect(try await server.waitForStream("LEGACY", count: 30) == 30)
        await engine.stop()
        // A second client for the same sink (a restarted pipeline) does not warn again.
        _ = try family.makeClient(for: try SinkAddress.parse(identity: "nats_stream:legacy"), options: nats.options)
        let warnings = logs.messages(at: .warning).filter { $0.contains("NATS Streaming is end of life") }
        #expect(warnings.count == 1)
    }

    @Test func natsServerKilledAndRestartedMidStreamLosesNothingForJetStream() async throws {
        let server = try NATSServer()
        try await server.createStream("EVENTS", subjects: ["events"])
        let engine = try Self.engine(Self.config(server))
        let total = 2000
        for chunk in 0..<20 {
            await engine.append(Self.records("jsm:events", (chunk * 100)..<((chunk + 1) * 100)))
            if chunk == 7 { server.kill() }
            if chunk == 14 { try server.start() }
            try await Task.sleep(for: .milliseconds(30))
        }
        #expect(
            try await server.waitForStream("EVENTS", count: total, timeout: .seconds(60)) == total,
            "every record stored exactly once (deduplicated)")
        #expect(try engine.deadLetters.entries().isEmpty, "an outage dead-letters nothing")
        await engine.stop()
    }

    @Test func aMessageAboveMaxPayloadIsDeadLettered() async throws {
        let server = try NATSServer(config: "max_payload: 2048")
        let subscriber = try NATSSubscriber(port: server.port, subject: "big")
        let engine = try Self.engine(Self.config(server))
        var records = Self.records("nats:big", 0..<5)
        records[2].payload = Array(("\"" + String(repeating: "x", count: 3000) + "\"").utf8)
        await engine.append(records)
        #expect(await subscriber.waitFor(count: 4).count == 4)
        let deadline = ContinuousClock.now + .seconds(10)
        while try engine.deadLetters.entries().isEmpty, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        let dead = try engine.deadLetters.entries(sink: "nats:big")
        #expect(dead.map(\.record.id) == ["r-2"])
        #expect(dead.first?.error.contains("more than the server's max_payload of 2048 bytes") == true)
        await engine.stop()
    }

    @Test(arguments: ["password", "token", "nkey"])
    func authenticates(_ method: String) async throws {
        let serverConfig: String
        switch method {
        case "password": serverConfig = #"authorization { user: "sinkd", password: "s3cret" }"#
        case "token": serverConfig = #"authorization { token: "t0ken" }"#
        default: serverConfig = #"authorization { users: [ { nkey: "\#(NATSProtocolTests.publicKey)" } ] }"#
        }
        let server = try NATSServer(config: serverConfig)
        let nats = Self.config(server) {
            switch method {
            case "password": $0.user = "sinkd"; $0.password = "s3cret"
            case "token": $0.token = "t0ken"
            default: $0.nkeySeed = NATSProtocolTests.seed
            }
        }
        let subscriberConnect: String
        switch method {
        case "password": subscriberConnect = #"{"user":"sinkd","pass":"s3cret"}"#
        case "token": subscriberConnect = #"{"auth_token":"t0ken"}"#
        default: subscriberConnect = ""
        }
        let subscriber =
            method == "nkey"
            ? nil : try NATSSubscriber(port: server.port, subject: "secure", connect: subscriberConnect)
        try await server.createStream("SECURE", subjects: ["secure.js"], authenticated: nats)
        let engine = try Self.engine(nats)
        await engine.append(Self.records("jsm:secure.js", 0..<10))
        #expect(try await server.waitForStream("SECURE", count: 10, authenticated: nats) == 10)
        if let subscriber {
            await engine.append(Self.records("nats:secure", 0..<10))
            #expect(await subscriber.waitFor(count: 10).count == 10)
        }
        await engine.stop()
    }

    @Test func refusedCredentialsPauseTheSinkAndSayWhy() async throws {
        let server = try NATSServer(config: #"authorization { user: "sinkd", password: "s3cret" }"#)
        let engine = try Self.engine(
            Self.config(server) {
                $0.user = "sinkd"; $0.password = "wrong"
            })
        await engine.append(Self.records("nats:x", 0..<3))
        #expect(await engine.wait(for: "nats:x", state: .down))
        let error = engine.snapshot(of: "nats:x")?.lastError ?? ""
        #expect(error.contains("refused the credentials"), "\(error)")
        #expect(!error.contains("wrong"), "the password is never shown")
        #expect(try engine.deadLetters.entries().isEmpty)
        await engine.stop()
    }

    @Test func failsOverToTheNextServerAndLeavesALameDuck() async throws {
        let first = try NATSServer()
        let second = try NATSServer()
        let onFirst = try NATSSubscriber(port: first.port, subject: "moving")
        let onSecond = try NATSSubscriber(port: second.port, subject: "moving")
        let nats = Self.config(first) { $0.servers = [first.url, second.url] }
        let engine = try Self.engine(nats)
        await engine.append(Self.records("nats:moving", 0..<10))
        #expect(await onFirst.waitFor(count: 10).count == 10, "the first server is used first")
        first.enterLameDuckMode()
        // Give the lame-duck INFO time to arrive; then new batches go to the other server.
        let deadline = ContinuousClock.now + .seconds(10)
        var batch = 10
        while onSecond.received.isEmpty, ContinuousClock.now < deadline {
            await engine.append(Self.records("nats:moving", batch..<(batch + 1)))
            batch += 1
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(!onSecond.received.isEmpty, "after lame-duck mode, publishing moved to the second server")
        first.kill()
        await engine.append(Self.records("nats:moving", 1000..<1010))
        let got = await onSecond.waitFor(count: onSecond.received.count + 10)
        #expect(Set(got).isSuperset(of: (1000..<1010).map { #"{"n":\#($0)}"# }))
        await engine.stop()
    }

    @Test func tlsWithTheConfiguredCAAndVerificationOn() async throws {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent(
            "sinkd-nats-tls-\(UUID().uuidString.prefix(8))"
        ).path
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let certificates = try TestCertificates(in: scratch)
        let server = try NATSServer(
            config: #"tls { cert_file: "\#(certificates.certificateFile)", key_file: "\#(certificates.keyFile)" }"#)
        // Verified against the configured CA: delivered.
        let trusted = Self.config(server) {
            $0.servers = ["tls://127.0.0.1:\(server.port)"]
            $0.tls.caFile = certificates.caFile
            $0.jsmCreateStream = true
        }
        let engine = try Self.engine(trusted)
        await engine.append(Self.records("jsm:secure", 0..<25))
        #expect(try await server.waitForStream("SECURE", count: 25, authenticated: trusted) == 25)
        await engine.stop()
        // Without the CA the server's certificate is not trusted: the sink pauses and says why.
        let untrusted = Self.config(server) { $0.servers = ["tls://127.0.0.1:\(server.port)"] }
        let refusing = try Self.engine(untrusted)
        await refusing.append(Self.records("jsm:secure", 100..<101))
        #expect(await refusing.wait(for: "jsm:secure", state: .down))
        let error = refusing.snapshot(of: "jsm:secure")?.lastError ?? ""
        #expect(error.lowercased().contains("certificate"), "\(error)")
        await refusing.stop()
    }

    @Test func mutualTLSWithAClientCertificate() async throws {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent(
            "sinkd-nats-mtls-\(UUID().uuidString.prefix(8))"
        ).path
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let c = try TestCertificates(in: scratch)
        let server = try NATSServer(
            config:
                #"tls { cert_file: "\#(c.certificateFile)", key_file: "\#(c.keyFile)", ca_file: "\#(c.caFile)", verify: true }"#
        )
        let withCertificate = Self.config(server) {
            $0.servers = ["tls://127.0.0.1:\(server.port)"]
            $0.tls = TLSConfig(caFile: c.caFile, certificateFile: c.clientCertificateFile, keyFile: c.clientKeyFile)
            $0.jsmCreateStream = true
        }
        let engine = try Self.engine(withCertificate)
        await engine.append(Self.records("jsm:mutual", 0..<5))
        #expect(try await server.waitForStream("MUTUAL", count: 5, authenticated: withCertificate) == 5)
        await engine.stop()
        // The same without a client certificate: the server refuses the handshake.
        let without = Self.config(server) {
            $0.servers = ["tls://127.0.0.1:\(server.port)"]
            $0.tls = TLSConfig(caFile: c.caFile)
        }
        let refused = try Self.engine(without)
        await refused.append(Self.records("jsm:mutual", 10..<11))
        #expect(await refused.wait(for: "jsm:mutual", state: .down))
        await refused.stop()
    }

    /// Only the first server is configured; it announces the second (a cluster route) in INFO's
    /// connect_urls; when the first dies, sinkd publishes through the one it discovered.
    @Test func discoversClusterMembersFromINFOAndFailsOverToThem() async throws {
        let routeA = LoopbackTCP.freePort()
        let routeB = LoopbackTCP.freePort()
        let a = try NATSServer(
            config:
                "server_name: a\ncluster { name: sinkd, listen: 127.0.0.1:\(routeA), routes: [nats-route://127.0.0.1:\(routeB)] }"
        )
        let b = try NATSServer(
            config:
                "server_name: b\ncluster { name: sinkd, listen: 127.0.0.1:\(routeB), routes: [nats-route://127.0.0.1:\(routeA)] }"
        )
        let onB = try NATSSubscriber(port: b.port, subject: "clustered")
        let family = NATSSinkFamily(config: Self.config(a), ackTimeout: .seconds(3))
        let engine = try Self.engine(Self.config(a), family: family)
        // Wait for the route, then for sinkd to have heard of b.
        let deadline = ContinuousClock.now + .seconds(20)
        var n = 0
        while !family.servers.servers.contains(where: { $0.port == b.port }), ContinuousClock.now < deadline {
            await engine.append(Self.records("nats:clustered", n..<(n + 1)))
            n += 1
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(
            family.servers.servers.map(\.port).contains(b.port),
            "b was learnt from connect_urls: \(family.servers.servers)")
        a.kill()
        await engine.append(Self.records("nats:clustered", 1000..<1010))
        let got = await onB.waitFor(count: 10, timeout: .seconds(30))
        #expect(
            Set(got).isSuperset(of: (1000..<1010).map { #"{"n":\#($0)}"# }), "published through the discovered server")
        await engine.stop()
    }

    /// Decentralized auth: an operator-mode server (memory resolver) and a user credentials file
    /// (user JWT + seed): sinkd presents the JWT and signs the nonce with the seed.
    @Test func authenticatesWithACredentialsFile() async throws {
        let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
            "Fixtures/operator_jwts.py"
        ).path
        let made = try await offThePool { () throws -> [String: String] in
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = ["python3", fixture]
            let out = Pipe()
            p.standardOutput = out
            try p.run()
            let data = out.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            guard p.terminationStatus == 0, let json = try JSONSerialization.jsonObject(with: data) as? [String: String]
            else {
                throw TestServerFailure("operator_jwts.py failed (pip install nkeys)")
            }
            return json
        }
        let server = try NATSServer(
            config:
                "operator: \(made["operator"]!)\nresolver: MEMORY\nresolver_preload: { \(made["account_pub"]!): \(made["account"]!) }",
            jetStream: false)
        let creds = server.directory + "/user.creds"
        try """
        -----BEGIN NATS USER JWT-----
        \(made["user"]!)
        ------END NATS USER JWT------

        ************************* IMPORTANT *************************
        NKEY Seed printed below can be used to sign and prove identity.

        -----BEGIN USER NKEY SEED-----
        \(made["seed"]!)
        ------END USER NKEY SEED------
        """.write(toFile: creds, atomically: true, encoding: .utf8)
        let nats = Self.config(server) { $0.credentialsFile = creds }
        let received = LockedCounter()
        let admin = try await NATSAdmin.connect(nats) { _, _ in received.increment() }
        try await admin.subscribe("secure")
        let engine = try Self.engine(nats)
        await engine.append(Self.records("nats:secure", 0..<20))
        #expect(await engine.waitForDelivered("nats:secure", 20) == 20)
        let deadline = ContinuousClock.now + .seconds(10)
        while received.value < 20, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(received.value == 20, "a subscriber of the same account got every message")
        await admin.close()
        await engine.stop()
        // Without the credentials the operator-mode server refuses the connection.
        let refused = try Self.engine(Self.config(server))
        await refused.append(Self.records("nats:secure", 100..<101))
        #expect(await refused.wait(for: "nats:secure", state: .down))
        await refused.stop()
    }
}

final class LockedCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    func increment() { lock.withLock { count += 1 } }
    var value: Int { lock.withLock { count } }
}
