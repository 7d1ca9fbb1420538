import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import SinkdCore
import SinkdDelivery
import SinkdTLS

/// `nats:SUBJECT`, `jsm:SUBJECT` and `nats_stream:SUBJECT` over sinkd's own NATS client.
///
/// - `nats` (core): PUBs, then a PING; the batch is delivered when its PONG arrives (the server
///   has processed every PUB before it). A permissions violation reported meanwhile makes the
///   batch retryable.
/// - `jsm`: HPUB with `Nats-Msg-Id: <record id>` and a reply subject on the connection's inbox;
///   a record is delivered when its PubAck arrives (a duplicate PubAck too).
/// - `nats_stream` (NATS Streaming, end of life): published as `jsm`, with one warning per sink.
public final class NATSSinkFamily: SinkFamily {
    public let name = ConfigFamily.nats
    let config: NATSSinkConfig
    let group: EventLoopGroup
    let logger: Logger
    let servers: NATSServerList
    let serverError: SinkConnectionError?
    private let tls: NIOLockedValueBox<NIOSSLContext?> = NIOLockedValueBox(nil)
    private let warned: NIOLockedValueBox<Set<String>> = NIOLockedValueBox([])
    /// How long a JetStream publish waits for its PubAck before it is retried.
    let ackTimeout: TimeAmount

    public init(
        config: NATSSinkConfig, group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "sinkd.nats"), ackTimeout: TimeAmount = .seconds(10)
    ) {
        self.config = config
        self.group = group
        self.logger = logger
        self.ackTimeout = ackTimeout
        var parsed: [NATSServerAddress] = []
        var error: SinkConnectionError?
        for text in config.servers {
            do { parsed.append(try NATSServerAddress(parsing: text)) } catch let e { error = e }
        }
        self.serverError = parsed.isEmpty ? (error ?? SinkConnectionError("sinks.nats.servers is empty")) : nil
        self.servers = NATSServerList(parsed)
    }

    public func limits(for address: SinkAddress, options: PipelineOptions) -> SinkLimits {
        // The server's max_payload (INFO) is known only once connected: the client checks it.
        .messageWindow(options, maxBatchBytes: 8 << 20, maxMessageBytes: 64 << 20)
    }

    public func makeClient(
        for address: SinkAddress, options: PipelineOptions
    ) throws(SinkConnectionError) -> any SinkClient {
        guard case .natsSubject(let subject, _) = address.target else {
            throw SinkConnectionError("not a nats sink: \(address)")
        }
        if let serverError { throw serverError }
        switch address.prefix {
        case .nats:
            if !SinkName.isValidNATSSubject(subject), warned.withLockedValue({ $0.insert(address.identity).inserted }) {
                logger.warning(
                    "this subject has an empty token; it is published as Conductor publishes it, but no subscriber can subscribe to it",
                    metadata: ["sink": "\(address.identity)", "subject": "\(subject)"])
            }
            return NATSSinkClient(family: self, mode: .core, subject: subject, poolSize: options.poolSize)
        case .natsStream:
            if warned.withLockedValue({ $0.insert(address.identity).inserted }) {
                logger.warning(
                    "NATS Streaming is end of life: nats_stream sinks are published to JetStream as jsm sinks",
                    metadata: ["sink": "\(address.identity)", "subject": "\(config.jsmSubjectPrefix + subject)"])
            }
            return NATSSinkClient(
                family: self, mode: .jetStream, subject: config.jsmSubjectPrefix + subject, poolSize: options.poolSize)
        default:
            return NATSSinkClient(
                family: self, mode: .jetStream, subject: config.jsmSubjectPrefix + subject, poolSize: options.poolSize)
        }
    }

    /// The CONNECT options for a server's INFO: credentials from the server address, else from
    /// the configuration; the nonce signed with the NKey seed or the credentials file's seed.
    func connectOptions(for server: NATSServerAddress, info: NATSServerInfo) throws -> NATSConnectOptions {
        var options = NATSConnectOptions()
        options.version = SinkdVersion.version
        options.tlsRequired = server.tls
        options.user = server.user ?? (config.user.isEmpty ? nil : config.user)
        options.password = server.password ?? (config.password.isEmpty ? nil : config.password)
        options.token = server.token ?? (config.token.isEmpty ? nil : config.token)
        var seed = config.nkeySeed
        if !config.credentialsFile.isEmpty {
            let text: String
            do {
                text = try String(contentsOfFile: config.credentialsFile, encoding: .utf8)
            } catch {
                throw SinkConnectionError(
                    "sinks.nats.credentials_file \(config.credentialsFile): cannot read it (\(error.localizedDescription))"
                )
            }
            let credentials = try NATSCredentials(text: text, path: config.credentialsFile)
            options.jwt = credentials.jwt
            seed = credentials.seed
        }
        if !seed.isEmpty {
            let pair: NKeyPair
            do { pair = try NKeyPair(seed: seed) } catch { throw SinkConnectionError("sinks.nats nkey seed: \(error)") }
            if options.jwt == nil { options.nkey = pair.publicKey }
            guard let nonce = info.nonce else {
                throw SinkConnectionError(
                    "the nats server sent no nonce to sign: it is not configured for NKey or JWT authentication")
            }
            options.signature = try pair.sign(nonce: nonce)
        }
        return options
    }

    /// The TLS context, built once from `sinks.nats.tls`.
    func tlsContext() throws(SinkConnectionError) -> NIOSSLContext {
        if let made = tls.withLockedValue({ $0 }) { return made }
        let made = try TLSContexts.client(config.tls, section: "sinks.nats.tls")
        tls.withLockedValue { $0 = made }
        return made
    }

    var tlsConfigured: Bool { !config.tls.caFile.isEmpty || !config.tls.certificateFile.isEmpty }
}

final class NATSSinkClient: SinkClient, Sendable {
    enum Mode: Sendable { case core, jetStream }

    let family: NATSSinkFamily
    let mode: Mode
    let subject: String
    let subjectBytes: [UInt8]
    private let pool: NIOLockedValueBox<(connections: [NATSConnection?], next: Int)>

    init(family: NATSSinkFamily, mode: Mode, subject: String, poolSize: Int) {
        self.family = family
        self.mode = mode
        self.subject = subject
        self.subjectBytes = Array(subject.utf8)
        self.pool = NIOLockedValueBox((Array(repeating: nil, count: max(1, poolSize)), 0))
    }

    func send(_ batch: [SequencedRecord]) async throws(SinkConnectionError) -> [DeliveryOutcome] {
        try await send(batch, queued: {})
    }

    /// `queued` once the batch's PUBs/HPUBs are queued on the slot's connection.
    func send(
        _ batch: [SequencedRecord], queued: @escaping @Sendable () -> Void
    ) async throws(SinkConnectionError) -> [DeliveryOutcome] {
        let (slot, connection) = try await connection()
        do {
            switch mode {
            case .core: return try await sendCore(batch, on: connection, queued: queued)
            case .jetStream:
                return try await sendJetStream(
                    batch, on: connection, mayCreateStream: family.config.jsmCreateStream, queued: queued)
            }
        } catch let error as SinkConnectionError {
            throw error
        } catch {
            await connection.close()
            pool.withLockedValue { if $0.connections[slot] === connection { $0.connections[slot] = nil } }
            throw SinkConnectionError("nats \(connection.server): \(error)")
        }
    }

    /// Core publish: PUBs and a PING; everything before the PONG was processed.
    private func sendCore(
        _ batch: [SequencedRecord], on connection: NATSConnection, queued: () -> Void
    ) async throws -> [DeliveryOutcome] {
        let maxPayload = connection.info.maxPayload
        var outcomes = [DeliveryOutcome](repeating: .delivered, count: batch.count)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(batch.reduce(0) { $0 + $1.record.payload.count + subjectBytes.count + 16 })
        var sent = 0
        for (i, item) in batch.enumerated() {
            if item.record.payload.count > maxPayload {
                outcomes[i] = .permanent(Self.tooLarge(item.record.payload.count, maxPayload))
                continue
            }
            NATSEncoder.pub(subject: subjectBytes, payload: item.record.payload, into: &bytes)
            sent += 1
        }
        guard sent > 0 else { return outcomes }
        if let error = try await connection.flush(bytes, timeout: .seconds(10), queued: queued) {
            for i in outcomes.indices where outcomes[i] == .delivered { outcomes[i] = .retryable("nats: \(error)") }
        }
        return outcomes
    }

    /// JetStream publish: HPUBs with Nats-Msg-Id, one PubAck each.
    private func sendJetStream(
        _ batch: [SequencedRecord], on connection: NATSConnection, mayCreateStream: Bool, queued: () -> Void = {}
    ) async throws -> [DeliveryOutcome] {
        let maxPayload = connection.info.maxPayload
        var outcomes = [DeliveryOutcome?](repeating: nil, count: batch.count)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(
            batch.reduce(0) { $0 + $1.record.payload.count + $1.record.id.utf8.count + subjectBytes.count + 96 })
        let batchNumber = connection.nextBatch()
        let replyPrefix = Array((connection.inbox + ".\(batchNumber).").utf8)
        var sentIndex: [Int] = []
        for (i, item) in batch.enumerated() {
            let size =
                item.record.payload.count + NATSEncoder.messageIDHeaderPrefix.count + item.record.id.utf8.count + 4
            if size > maxPayload {
                outcomes[i] = .permanent(Self.tooLarge(size, maxPayload))
                continue
            }
            NATSEncoder.jetStreamPublish(
                subject: subjectBytes, replyPrefix: replyPrefix, index: sentIndex.count, messageID: item.record.id,
                payload: item.record.payload, into: &bytes)
            sentIndex.append(i)
        }
        guard !sentIndex.isEmpty else { return outcomes.map { $0! } }
        let replies = try await connection.requests(
            bytes, batch: batchNumber, count: sentIndex.count, timeout: family.ackTimeout, queued: queued)
        var noStream: [Int] = []
        for (k, reply) in replies.enumerated() {
            let i = sentIndex[k]
            switch JetStreamPubAck.outcome(reply, timeout: family.ackTimeout) {
            case .outcome(let outcome): outcomes[i] = outcome
            case .noStream: noStream.append(i)
            }
        }
        if !noStream.isEmpty {
            guard mayCreateStream else {
                throw SinkConnectionError(
                    "no JetStream stream captures subject '\(subject)' (or JetStream is not enabled): create one, or set sinks.nats.jsm.create_stream: true"
                )
            }
            try await createStream(on: connection)
            let again = try await sendJetStream(noStream.map { batch[$0] }, on: connection, mayCreateStream: false)
            for (k, i) in noStream.enumerated() { outcomes[i] = again[k] }
        }
        return outcomes.map { $0! }
    }

    /// Creates the stream for this sink's subject, named as Conductor names it.
    private func createStream(on connection: NATSConnection) async throws {
        let name = JetStreamPubAck.streamName(for: subject)
        let batchNumber = connection.nextBatch()
        var bytes: [UInt8] = []
        let config =
            #"{"name":\#(JSONText.quoted(name)),"subjects":[\#(JSONText.quoted(subject))],"storage":"file","num_replicas":1}"#
        NATSEncoder.request(
            subject: "$JS.API.STREAM.CREATE.\(name)", replyTo: connection.inbox + ".\(batchNumber).0",
            payload: Array(config.utf8), into: &bytes)
        let reply = try await connection.requests(bytes, batch: batchNumber, count: 1, timeout: family.ackTimeout)[0]
        guard let reply else {
            throw SinkConnectionError("JetStream did not answer the creation of stream \(name) within the ack timeout")
        }
        if reply.status == 503 {
            throw SinkConnectionError(
                "JetStream is not enabled on nats server \(connection.server) (start it with -js)")
        }
        if let error = JetStreamPubAck.apiError(reply.payload), error.errCode != 10058 {  // 10058: name in use (created meanwhile)
            throw SinkConnectionError(
                "JetStream refused to create stream \(name) for subject '\(subject)': \(error.description)")
        }
        family.logger.notice("created JetStream stream", metadata: ["stream": "\(name)", "subject": "\(subject)"])
    }

    static func tooLarge(_ size: Int, _ max: Int) -> String {
        "nats: the message is \(size) bytes, more than the server's max_payload of \(max) bytes"
    }

    /// A usable pooled connection, connecting (to the next server that answers) when needed.
    private func connection() async throws(SinkConnectionError) -> (Int, NATSConnection) {
        let (slot, existing) = pool.withLockedValue { p -> (Int, NATSConnection?) in
            let slot = p.next
            p.next = (p.next + 1) % p.connections.count
            return (slot, p.connections[slot])
        }
        if let existing, existing.isUsable { return (slot, existing) }
        let made = try await connect()
        pool.withLockedValue { $0.connections[slot] = made }
        return (slot, made)
    }

    private func connect() async throws(SinkConnectionError) -> NATSConnection {
        var failures: [String] = []
        let family = self.family
        for server in family.servers.rotation() {
            let wanted = server.tls || family.tlsConfigured
            // A context is at hand even when TLS is not asked for: a server may require it.
            let tls: NIOSSLContext? = wanted ? try family.tlsContext() : try? family.tlsContext()
            do {
                let connection = try await NATSConnection.connect(
                    to: server, tls: tls, tlsWanted: wanted, group: family.group, timeout: .seconds(5),
                    options: { info in try family.connectOptions(for: server, info: info) },
                    onInfo: { info in family.servers.discovered(info.connectURLs, tls: server.tls) })
                family.servers.used(server)
                family.servers.discovered(connection.info.connectURLs, tls: server.tls)
                return connection
            } catch let error as SinkConnectionError {
                failures.append("\(server): \(error.message)")
            } catch {
                failures.append("\(server): \(error)")
            }
        }
        throw SinkConnectionError("cannot connect to any nats server: " + failures.joined(separator: "; "))
    }

    func close() async {
        let connections = pool.withLockedValue { p -> [NATSConnection] in
            defer { p.connections = Array(repeating: nil, count: p.connections.count) }
            return p.connections.compactMap { $0 }
        }
        for c in connections { await c.close() }
    }
}

/// What a JetStream PubAck means for its record.
enum JetStreamPubAck {
    enum Result: Equatable {
        case outcome(DeliveryOutcome)
        /// 503 / no responders: no stream captures the subject (or JetStream is off).
        case noStream
    }

    struct APIError: Equatable, CustomStringConvertible {
        var code: Int
        var errCode: Int
        var text: String
        var description: String { "\(text) (code \(code), err_code \(errCode))" }
    }

    /// Permanent JetStream API errors: the message itself can never be stored.
    /// 10054: message size exceeds the stream's maximum.
    static let permanentErrCodes: Set<Int> = [10054]

    static func outcome(_ reply: NATSReply?, timeout: TimeAmount) -> Result {
        guard let reply else {
            return .outcome(.retryable("nats: no JetStream PubAck within \(timeout.nanoseconds / 1_000_000_000) s"))
        }
        if let status = reply.status {
            if status == 503 { return .noStream }
            if status >= 400 { return .outcome(.retryable("nats: JetStream answered status \(status)")) }
        }
        guard let error = apiError(reply.payload) else {
            // {"stream":"S","seq":N} or with "duplicate":true: stored (or already stored). Nothing
            // else is a PubAck: a reply without both is not counted as stored.
            return isPubAck(reply.payload)
                ? .outcome(.delivered)
                : .outcome(
                    .retryable(
                        "nats: a reply that is not a JetStream PubAck: \(String(decoding: reply.payload.prefix(120), as: UTF8.self))"
                    ))
        }
        // 10039: JetStream not enabled (for the account); other 503s (10077 store failed, e.g.
        // the stream is full) are about the stream's state, retried.
        if error.errCode == 10039 { return .noStream }
        if permanentErrCodes.contains(error.errCode) { return .outcome(.permanent("nats JetStream: \(error)")) }
        return .outcome(.retryable("nats JetStream: \(error)"))
    }

    /// A JSON object with `"stream":"…"` and `"seq":` followed by a digit: what a PubAck of a
    /// stored message is (checked by bytes: this runs for every message).
    static func isPubAck(_ payload: [UInt8]) -> Bool {
        guard payload.first == UInt8(ascii: "{"), payload.last == UInt8(ascii: "}") else { return false }
        func after(_ key: String) -> Int? {
            let needle = Array(key.utf8)
            guard payload.count >= needle.count else { return nil }
            for start in 0...(payload.count - needle.count) where payload[start] == needle[0] {
                if payload[start..<(start + needle.count)].elementsEqual(needle) { return start + needle.count }
            }
            return nil
        }
        guard after(#""stream":""#) != nil, let seq = after(#""seq":"#), seq < payload.count else { return false }
        return (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(payload[seq])
    }

    /// The `error` object of a JetStream API reply, or nil when it has none. The PubAck of a
    /// stored message has no `"error"` key, so most replies are not parsed at all.
    static func apiError(_ payload: [UInt8]) -> APIError? {
        guard payload.count >= 9, contains(payload, #""error""#) else { return nil }
        guard let object = (try? JSONSerialization.jsonObject(with: Data(payload))) as? [String: Any],
            let error = object["error"] as? [String: Any]
        else { return nil }
        return APIError(
            code: (error["code"] as? NSNumber)?.intValue ?? 0, errCode: (error["err_code"] as? NSNumber)?.intValue ?? 0,
            text: error["description"] as? String ?? "unknown error")
    }

    static func contains(_ bytes: [UInt8], _ needle: String) -> Bool {
        let n = Array(needle.utf8)
        guard bytes.count >= n.count else { return false }
        for start in 0...(bytes.count - n.count) where bytes[start] == n[0] {
            if bytes[start..<(start + n.count)].elementsEqual(n) { return true }
        }
        return false
    }

    /// Conductor's stream name for a subject: '.'→'_', '*'→'ANY', '>'→'ALL', upper-cased.
    static func streamName(for subject: String) -> String {
        subject.replacingOccurrences(of: ".", with: "_").replacingOccurrences(of: "*", with: "ANY")
            .replacingOccurrences(of: ">", with: "ALL").uppercased()
    }
}
