import AsyncHTTPClient
import NIOCore
import NIOPosix
import Testing
import SinkdCore
import SinkdDelivery
@testable import SinkdSQSSink
import SinkdTestSupport

/// Every request sinkd makes to AWS, against an endpoint that sends its headers and then trickles
/// the body (issue 33: an IMDSv2 or container credentials endpoint doing that hung the SQS sink for
/// ever, status up, nothing logged; the limits stopped applying once headers arrived). Each must
/// end at its deadline with the reason, and a body larger than its cap must be refused.
// .timeLimit: a guard against a hang, not a measurement. It counts the wait for a blocking test
// slot (BlockingThreads) too, which on a loaded CI machine has taken over a minute.
@Suite(.serialized, .timeLimit(.minutes(5))) struct StalledAWSEndpointTests {
    /// Answers every request with headers, then one byte every 100 ms of a long body.
    static func trickling() throws -> ScriptedTCPServer {
        try ScriptedTCPServer { connection, received in
            guard String(decoding: received, as: UTF8.self).contains("\r\n\r\n") else { return }
            connection.write("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
            connection.trickle(Array(repeating: UInt8(ascii: " "), count: 1000), every: .milliseconds(100))
        }
    }

    static var timeouts: AWSRequestTimeouts {
        var t = AWSRequestTimeouts()
        t.sqs = .milliseconds(600)
        t.sts = .milliseconds(600)
        t.container = .milliseconds(600)
        t.instanceMetadata = .milliseconds(600)
        return t
    }

    static func fetcher(sts: String = "http://127.0.0.1:9/") -> (AWSCredentialFetcher, HTTPClient) {
        let client = HTTPClient(eventLoopGroup: MultiThreadedEventLoopGroup.singleton)
        return (AWSCredentialFetcher(client: client, region: "us-east-1", stsEndpoint: sts, timeouts: timeouts), client)
    }

    /// Runs `body`, which must throw a SinkConnectionError naming the deadline, in well under the
    /// time the trickle would take (100 s).
    static func expectCutAtTheDeadline(_ what: String, _ body: () async throws -> Void) async {
        let start = ContinuousClock.now
        do {
            try await body()
            Issue.record("\(what): expected a failure")
        } catch {
            #expect("\(error)".contains("no complete response within 600ms"), "\(what): \(error)")
        }
        #expect(ContinuousClock.now - start < .seconds(5), "\(what)")
    }

    @Test func instanceMetadata() async throws {
        let server = try Self.trickling()
        let (fetcher, client) = Self.fetcher()
        await Self.expectCutAtTheDeadline("IMDSv2") {
            _ = try await fetcher.fetch(.instanceMetadata(endpoint: "http://127.0.0.1:\(server.port)"))
        }
        try await client.shutdown()
    }

    @Test func containerCredentials() async throws {
        let server = try Self.trickling()
        let (fetcher, client) = Self.fetcher()
        await Self.expectCutAtTheDeadline("container credentials") {
            _ = try await fetcher.fetch(
                .container(url: "http://127.0.0.1:\(server.port)/v2/credentials/x", tokenFile: nil, token: nil))
        }
        try await client.shutdown()
    }

    @Test func stsAssumeRole() async throws {
        let server = try Self.trickling()
        let (fetcher, client) = Self.fetcher(sts: "http://127.0.0.1:\(server.port)/")
        let base = SQSCredentials.Source.fixed(
            .init(accessKeyID: "AKID", secretAccessKey: "secret", sessionToken: nil), origin: "test")
        await Self.expectCutAtTheDeadline("STS AssumeRole") {
            _ = try await fetcher.fetch(
                .assumeRole(
                    roleARN: "arn:aws:iam::123456789012:role/r", sessionName: "s", externalID: nil,
                    durationSeconds: nil, source: base, origin: "test"))
        }
        try await client.shutdown()
    }

    @Test func sqsSendMessageBatch() async throws {
        let server = try Self.trickling()
        var config = SQSSinkConfig()
        config.endpoint = "http://127.0.0.1:\(server.port)"
        config.accessKeyID = "k"
        config.secretAccessKey = "s"
        let family = SQSSinkFamily(config: config, environment: [:], timeouts: Self.timeouts)
        let client = try family.makeClient(
            for: try SinkAddress.parse(identity: "sqs:http://127.0.0.1:\(server.port)/000000000000/q"),
            options: config.options)
        await Self.expectCutAtTheDeadline("SendMessageBatch") {
            _ = try await client.send([
                SequencedRecord(seq: 1, record: EventRecord(id: "r1", sink: "sqs:q", payload: Array("{}".utf8)))
            ])
        }
        await client.close()
        await family.shutdown()
    }

    /// A body announced and sent larger than a credentials answer can be is refused at its cap
    /// (1 MiB), not collected.
    @Test func aHugeCredentialsBodyIsRefusedAtItsCap() async throws {
        let server = try ScriptedTCPServer { connection, received in
            guard String(decoding: received, as: UTF8.self).contains("\r\n\r\n") else { return }
            connection.write("HTTP/1.1 200 OK\r\nContent-Length: \(100 << 20)\r\n\r\n")
            connection.flood(Array(repeating: UInt8(ascii: " "), count: 64 << 10), total: 100 << 20)
        }
        let (fetcher, client) = Self.fetcher()
        do {
            _ = try await fetcher.fetch(
                .container(url: "http://127.0.0.1:\(server.port)/creds", tokenFile: nil, token: nil))
            Issue.record("expected a failure")
        } catch {
            #expect("\(error)".contains("a response body larger than 1048576 bytes"), "\(error)")
        }
        try await client.shutdown()
    }
}
