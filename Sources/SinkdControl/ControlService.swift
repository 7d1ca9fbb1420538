#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle
import SinkdCore
import SinkdDelivery
import SinkdIngest
import SinkdWAL

/// What `sinkd status` shows: the daemon, the WAL and every sink.
public struct StatusReport: Codable, Sendable, Equatable {
    public struct Sink: Codable, Sendable, Equatable {
        public var sink: String
        /// up, down, paused, idle (no pipeline running), stopping, waiting (family not configured).
        public var state: String
        public var backlogRecords: UInt64
        public var backlogBytes: UInt64
        public var oldestUndeliveredSeconds: Double?
        public var delivered: UInt64
        public var retried: UInt64
        public var deadLettered: UInt64
        public var inFlight: Int
        /// Payload bytes of records its pipeline holds in memory (waiting or in flight).
        public var heldBytes: Int? = nil
        public var lastError: String?
    }

    public var version: String
    public var uptimeSeconds: Double
    public var configGeneration: Int
    public var configPath: String
    public var walSegments: Int
    public var walBytes: Int
    public var walNextSeq: UInt64
    /// Since when (ms since 1970) the WAL's disk is full and records are held; nil when it is not.
    public var walDiskFullSinceMillis: UInt64? = nil
    /// Failed WAL writes or syncs since start; records written again from sinkd's copy; records
    /// whose sync failed with no copy left (at risk on a power loss).
    public var walWriteFailures: UInt64? = nil
    public var walRewrittenRecords: UInt64? = nil
    public var walRecordsAtRisk: UInt64? = nil
    public var ingestConnections: Int
    /// Payload bytes held in memory by all pipelines (bounded by delivery.max_held_bytes).
    public var heldBytes: Int? = nil
    public var sinks: [Sink]
}

/// The control socket: one JSON request per line, one JSON response per line.
///
/// Requests: `{"command":"status"}`; `{"command":"dlq-replay","sink":S?,"since":ms?,"until":ms?}`
/// (appends matching dead letters to the WAL again, then removes them from the store);
/// `{"command":"dlq-purge", ...same filters}`; `{"command":"reload"}` (re-reads the configuration,
/// answers once it is applied or rejected). Responses: `{"ok":true,...}` or
/// `{"ok":false,"error":"..."}`.
public final class ControlService: Service, Sendable {
    let path: String
    let wal: WriteAheadLog
    let delivery: DeliveryService
    let deadLetters: DeadLetterStore
    let ingestState: ServerState
    let logger: Logger
    /// Runs a configuration reload and reports its outcome (nil: reloading is not available).
    let reload: (@Sendable () async -> ReloadOutcome)?
    let started = Date()
    /// The listening channel, and whether sinkd created its socket file.
    private let channel = NIOLockedValueBox<(Channel, Bool)?>(nil)

    public init(
        config: SinkdConfig, wal: WriteAheadLog, delivery: DeliveryService, deadLetters: DeadLetterStore,
        ingestState: ServerState, logger: Logger,
        reload: (@Sendable () async -> ReloadOutcome)? = nil
    ) {
        self.path = config.control.socket
        self.reload = reload
        self.wal = wal
        self.delivery = delivery
        self.deadLetters = deadLetters
        self.ingestState = ingestState
        self.logger = logger
    }

    /// Listens on `control.socket`, or on `inherited`, a listening socket passed by systemd
    /// (socket activation: systemd owns its file, so sinkd never unlinks it).
    public func bind(inherited: CInt? = nil) async throws {
        let bootstrap = ServerBootstrap(group: ControlThreads.loop)
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        ByteToMessageHandler(LineFramer(maxLineBytes: 64 << 10)))
                    try channel.pipeline.syncOperations.addHandler(ControlHandler(service: self))
                }
            }
        let bound: Channel
        if let inherited {
            bound = try await bootstrap.withBoundSocket(inherited).get()
        } else {
            try IngestService.prepareSocketPath(path)
            bound = try await bootstrap.bind(unixDomainSocketPath: path).get()
            chmod(path, 0o600)
        }
        channel.withLockedValue { $0 = (bound, inherited == nil) }
    }

    public func run() async throws {
        if channel.withLockedValue({ $0 }) == nil { try await bind() }
        try? await gracefulShutdown()
        let (bound, ownsPath) = channel.withLockedValue { $0! }
        try? await bound.close()
        if ownsPath { unlink(path) }
    }

    public func status() -> StatusReport {
        let generation = delivery.generation
        let config = generation.config
        let stats = wal.currentStats
        let backlog = wal.backlog()
        let live = Dictionary(uniqueKeysWithValues: delivery.snapshots.map { ($0.sink, $0) })
        let now = Date().timeIntervalSince1970 * 1000
        var sinks: [StatusReport.Sink] = []
        for name in Set(backlog.keys).union(live.keys).sorted() {
            let b = backlog[name]
            let p = live[name]
            let state: String
            if let p {
                state = p.state.rawValue
            } else if let address = try? SinkAddress.parse(identity: name), let family = address.prefix.configFamily,
                config.sinks.configuredFamilies.contains(family)
            {
                state = "idle"
            } else {
                state = "waiting"
            }
            sinks.append(
                StatusReport.Sink(
                    sink: name, state: state, backlogRecords: b?.records ?? 0, backlogBytes: b?.bytes ?? 0,
                    oldestUndeliveredSeconds: b?.oldestMillis.map { max(0, (now - Double($0)) / 1000) },
                    delivered: p?.delivered ?? 0, retried: p?.retried ?? 0, deadLettered: p?.deadLettered ?? 0,
                    inFlight: p?.inFlight ?? 0, heldBytes: p?.heldBytes ?? 0,
                    lastError: p?.lastError.map(Redactor.shared.redact)))
        }
        return StatusReport(
            version: SinkdVersion.version, uptimeSeconds: Date().timeIntervalSince(started),
            configGeneration: generation.number,
            configPath: config.sourcePath, walSegments: stats.segments, walBytes: stats.bytes,
            walNextSeq: stats.nextSeq,
            walDiskFullSinceMillis: stats.diskFullSinceMillis > 0 ? stats.diskFullSinceMillis : nil,
            walWriteFailures: stats.writeFailures, walRewrittenRecords: stats.rewrittenRecords,
            walRecordsAtRisk: stats.recordsAtRisk,
            ingestConnections: ingestState.openConnections, heldBytes: delivery.heldBudget.held, sinks: sinks)
    }

    /// Why `record` (a dead letter to replay) would not pass ingest, or nil. The request it came
    /// from is rebuilt and parsed by ingest's own parser, so the checks are the same.
    static func validateForReplay(_ record: EventRecord, maxRecordBytes: Int) -> String? {
        let line = RequestParser.requestLine(for: record)
        guard line.count <= maxRecordBytes else {
            return "the record is \(line.count) bytes; ingest.max_record_bytes is \(maxRecordBytes)"
        }
        switch RequestParser.parse(line) {
        case .success: return nil
        case .failure(let rejection): return "\(rejection.code.rawValue): \(rejection.message)"
        }
    }

    /// Handles one request line; returns the response line (without newline).
    func handle(_ line: [UInt8]) -> [UInt8] {
        guard let request = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any],
            let command = request["command"] as? String
        else {
            return Self.error("expected a JSON object with \"command\" (status, reload, dlq-replay, dlq-purge)")
        }
        let sink = request["sink"] as? String
        let since = (request["since"] as? NSNumber)?.uint64Value
        let until = (request["until"] as? NSNumber)?.uint64Value
        switch command {
        case "status":
            guard let data = try? JSONEncoder().encode(status()) else { return Self.error("cannot encode the status") }
            return Array(#"{"ok":true,"status":"#.utf8) + Array(data) + [UInt8(ascii: "}")]
        case "test-wedge-event-loops" where ProcessInfo.processInfo.environment["SINKD_TEST_SEAMS"] == "1":
            // Test seam (only with SINKD_TEST_SEAMS=1): blocks every event loop for a while, so
            // tests can check that the watchdog pings stop. The answer comes once they run again.
            let micros = UInt32(max(0, min(60, (request["seconds"] as? NSNumber)?.doubleValue ?? 1)) * 1_000_000)
            for loop in MultiThreadedEventLoopGroup.singleton.makeIterator() { loop.execute { usleep(micros) } }
            return Array(#"{"ok":true}"#.utf8)
        case "reload":
            guard let reload else { return Self.error("this sinkd cannot reload its configuration") }
            // The control handler runs on the control thread (ControlThreads): waiting here
            // blocks no event loop and no thread of the pool that does WAL and file I/O.
            let outcome = NIOLockedValueBox<ReloadOutcome?>(nil)
            let done = DispatchSemaphore(value: 0)
            Task {
                let result = await reload()
                outcome.withLockedValue { $0 = result }
                done.signal()
            }
            done.wait()
            return outcome.withLockedValue { $0! }.encoded()
        case "dlq-purge":
            do {
                let removed = try deadLetters.purge(sink: sink, since: since, until: until)
                logger.notice("dead letters purged", metadata: ["count": "\(removed)", "sink": "\(sink ?? "*")"])
                return Array(#"{"ok":true,"purged":\#(removed)}"#.utf8)
            } catch {
                return Self.error("cannot purge dead letters: \(error)")
            }
        case "dlq-replay":
            do {
                return try replay(sink: sink, since: since, until: until)
            } catch {
                return Self.error("cannot replay dead letters: \(error)")
            }
        case "test-block-control" where ProcessInfo.processInfo.environment["SINKD_TEST_SEAMS"] == "1":
            // Test seam: a control request that takes long (a huge dead-letter store, a slow
            // reload). It must hold only the control thread, never ingest or delivery.
            logger.notice("test seam: a control request blocks its thread")
            usleep(UInt32(max(0, min(60, (request["seconds"] as? NSNumber)?.doubleValue ?? 1)) * 1_000_000))
            return Array(#"{"ok":true}"#.utf8)
        default:
            return Self.error("unknown command '\(command)' (known: status, dlq-replay, dlq-purge)")
        }
    }

    /// Dead letters back into the WAL, streamed: entries are read one line at a time and appended
    /// in chunks (≤ 4 MiB of payloads or 10,000 entries), each made durable before the next; at the
    /// end, or when a chunk fails, exactly the entries already in the WAL leave the store.
    private func replay(sink: String?, since: UInt64?, until: UInt64?) throws -> [UInt8] {
        let maxRecordBytes = delivery.generation.config.ingest.maxRecordBytes
        var invalidJSON: [UInt8] = []
        var invalidCount = 0
        var chunk: [DeadLetterStore.Entry] = []
        var chunkBytes = 0
        var replayed = Set<UInt64>()
        var failure: String?
        func flush() {
            guard failure == nil, !chunk.isEmpty else { return }
            defer { chunk.removeAll(keepingCapacity: true); chunkBytes = 0 }
            let (outcomes, ticket) = wal.append(
                chunk.map(\.record), nowMillis: UInt64(Date().timeIntervalSince1970 * 1000), checkDuplicates: false)
            let accepted = outcomes.filter { if case .accepted = $0 { true } else { false } }.count
            // Wait for the round whatever was taken: what is in the WAL must leave the store.
            let done = DispatchSemaphore(value: 0)
            let result = NIOLockedValueBox<String?>(nil)
            wal.whenDurable(ticket) { r in
                if case .failure(let e) = r { result.withLockedValue { $0 = "\(e)" } }
                done.signal()
            }
            done.wait()  // on the control thread: holds no event loop and no shared pool
            if let error = result.withLockedValue({ $0 }) {
                failure = "the WAL could not store the replayed records: \(error)"
                return
            }
            for (e, outcome) in zip(chunk, outcomes) { if case .accepted = outcome { replayed.insert(e.seq) } }
            if accepted < chunk.count {
                failure =
                    "the WAL took \(replayed.count) of the records (it is full or stopping); those left the dead-letter store, the others stay: replay again later"
            }
        }
        try deadLetters.forEachEntry(sink: sink, since: since, until: until) { e in
            if let reason = Self.validateForReplay(e.record, maxRecordBytes: maxRecordBytes) {
                invalidJSON += Array((invalidCount == 0 ? "" : ",").utf8) + Array(#"{"seq":\#(e.seq),"sink":"#.utf8)
                JSONText.appendString(e.record.sink, to: &invalidJSON)
                invalidJSON += Array(#","error":"#.utf8)
                JSONText.appendString(reason, to: &invalidJSON)
                invalidJSON += Array("}".utf8)
                invalidCount += 1
                return true
            }
            chunk.append(e)
            chunkBytes += e.record.payload.count
            if chunkBytes >= 4 << 20 || chunk.count >= 10_000 { flush() }
            return failure == nil
        }
        flush()
        // In the WAL now: safe to remove from the store (only those; the filter is their seqs).
        if !replayed.isEmpty {
            try deadLetters.purge(sink: sink, since: since, until: until, seqs: replayed)
            logger.notice(
                "dead letters replayed into the WAL",
                metadata: ["count": "\(replayed.count)", "sink": "\(sink ?? "*")"])
        }
        if let failure { return Self.error(failure) }
        let invalidPart = Array(#","invalid":["#.utf8) + invalidJSON + Array("]".utf8)
        return Array(#"{"ok":true,"replayed":\#(replayed.count)"#.utf8) + invalidPart + Array("}".utf8)
    }

    static func error(_ message: String) -> [UInt8] {
        var out = Array(#"{"ok":false,"error":"#.utf8)
        JSONText.appendString(message, to: &out)
        out.append(UInt8(ascii: "}"))
        return out
    }
}

/// Threads of their own for the control socket and the metrics endpoint: what operators ask
/// (a status, a scrape, a dead-letter replay, a reload) never runs on an ingest event loop or
/// occupies a thread of `NIOThreadPool.singleton`, which does WAL reads and file writes.
public enum ControlThreads {
    /// Accepts and frames control and metrics connections.
    public static let loop: EventLoop = MultiThreadedEventLoopGroup(numberOfThreads: 1).next()
    /// Runs control requests one after another (they may wait for the WAL or a reload).
    public static let pool: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
        return pool
    }()
}

/// The outcome of a configuration reload, as the control socket reports it.
public struct ReloadOutcome: Sendable, Equatable {
    public var applied: Bool
    /// The generation running after the reload (unchanged when rejected).
    public var generation: Int
    /// Why the new configuration was rejected (each error, positioned), or warnings about
    /// settings that only take effect at the next restart.
    public var messages: [String]

    public init(applied: Bool, generation: Int, messages: [String]) {
        self.applied = applied
        self.generation = generation
        self.messages = messages
    }

    func encoded() -> [UInt8] {
        var out = Array(#"{"ok":"#.utf8) + Array((applied ? "true" : "false").utf8)
        out += Array(#","generation":\#(generation),"#.utf8)
        out += Array(
            (applied
                ? #""warnings":["#
                : #""error":"the new configuration was rejected; sinkd keeps running on the old one","errors":["#).utf8)
        for (i, m) in messages.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            JSONText.appendString(m, to: &out)
        }
        out += Array("]}".utf8)
        return out
    }
}

final class ControlHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = IngestFrame
    typealias OutboundOut = ByteBuffer
    let service: ControlService

    init(service: ControlService) {
        self.service = service
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .line(let buffer) = unwrapInboundIn(data) else {
            context.writeAndFlush(
                wrapOutboundOut(
                    context.channel.allocator.buffer(bytes: ControlService.error("request too large") + [0x0A])),
                promise: nil)
            return
        }
        let line = Array(buffer.readableBytesView)
        let service = self.service
        let channel = context.channel
        // Requests may block (dead-letter files, WAL durability, a reload): on the control
        // thread, never an event loop or the pool that runs WAL reads and file writes.
        ControlThreads.pool.submit { _ in
            let response = service.handle(line) + [0x0A]
            channel.writeAndFlush(channel.allocator.buffer(bytes: response), promise: nil)
        }
    }
}
