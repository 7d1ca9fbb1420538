import Foundation
import NIOCore
import NIOPosix
import SinkdCore

/// A connection for tools rather than sinks: JetStream API requests (create a stream, count its
/// messages) and plain subscriptions. The benchmark and the tests use it to set up and check.
public final class NATSAdmin: Sendable {
    let connection: NATSConnection

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// Connects to the first server of `config` with its credentials and TLS; `onMessage` hears
    /// the messages of `subscribe`d subjects.
    public static func connect(
        _ config: NATSSinkConfig, onMessage: (@Sendable (String, [UInt8]) -> Void)? = nil
    ) async throws -> NATSAdmin {
        let family = NATSSinkFamily(config: config)
        let server = try NATSServerAddress(parsing: config.servers.first ?? "nats://127.0.0.1:4222")
        let tls = server.tls || family.tlsConfigured ? try family.tlsContext() : nil
        let connection = try await NATSConnection.connect(
            to: server, tls: tls, tlsWanted: tls != nil, group: MultiThreadedEventLoopGroup.singleton,
            timeout: .seconds(5), options: { try family.connectOptions(for: server, info: $0) },
            onInfo: { _ in }, onMessage: onMessage, parser: NATSParser())
        return NATSAdmin(connection: connection)
    }

    init(connection: NATSConnection) {
        self.connection = connection
    }

    /// Subscribes to `subject` and waits until the server has registered it.
    public func subscribe(_ subject: String) async throws {
        var bytes: [UInt8] = []
        NATSEncoder.sub(subject: subject, sid: "s\(connection.nextBatch())", into: &bytes)
        _ = try await connection.flush(bytes, timeout: .seconds(5))
    }

    /// A request/reply; the reply's payload.
    public func request(
        _ subject: String, _ body: String = "", timeout: TimeAmount = .seconds(5)
    ) async throws -> [UInt8] {
        let batch = connection.nextBatch()
        var bytes: [UInt8] = []
        NATSEncoder.request(
            subject: subject, replyTo: connection.inbox + ".\(batch).0", payload: Array(body.utf8), into: &bytes)
        guard let reply = try await connection.requests(bytes, batch: batch, count: 1, timeout: timeout)[0] else {
            throw Failure(description: "no reply to \(subject)")
        }
        if reply.status == 503 { throw Failure(description: "no responders for \(subject) (is JetStream enabled?)") }
        return reply.payload
    }

    /// A JetStream API request; the reply's JSON object.
    public func jetStream(_ subject: String, _ body: String = "") async throws -> [String: Any] {
        let payload = try await request(subject, body)
        guard let object = try JSONSerialization.jsonObject(with: Data(payload)) as? [String: Any] else {
            throw Failure(description: "\(subject) answered \(String(decoding: payload, as: UTF8.self))")
        }
        return object
    }

    /// Creates a file-backed stream with one replica.
    public func createStream(_ name: String, subjects: [String], duplicateWindowSeconds: Int = 120) async throws {
        let subjectsJSON = subjects.map(JSONText.quoted).joined(separator: ",")
        let body =
            #"{"name":\#(JSONText.quoted(name)),"subjects":[\#(subjectsJSON)],"storage":"file","num_replicas":1,"duplicate_window":\#(duplicateWindowSeconds * 1_000_000_000)}"#
        let reply = try await jetStream("$JS.API.STREAM.CREATE.\(name)", body)
        if let error = reply["error"] { throw Failure(description: "cannot create stream \(name): \(error)") }
    }

    /// Messages stored in stream `name` (0 when it does not exist).
    public func streamMessageCount(_ name: String) async throws -> Int {
        let reply = try await jetStream("$JS.API.STREAM.INFO.\(name)")
        return ((reply["state"] as? [String: Any])?["messages"] as? NSNumber)?.intValue ?? 0
    }

    public func close() async {
        await connection.close()
    }
}
