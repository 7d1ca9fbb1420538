import Logging
import NIOConcurrencyHelpers
import SinkdCore
import SinkdWAL
import Synchronization

/// What the connection handler needs from the daemon, shared by all connections.
public final class IngestContext: Sendable {
    public let wal: WriteAheadLog
    /// The configured sinks records are checked against; replaced by a config reload.
    public var sinks: SinksConfig { sinksBox.withLockedValue { $0 } }
    private let sinksBox: NIOLockedValueBox<SinksConfig>
    /// Bumped by every reload: connections drop their cached sink checks when it changes.
    public var sinksGeneration: Int { generation.load(ordering: .acquiring) }
    private let generation = Atomic(0)
    public let configPath: String
    public let whenFull: WhenFull
    public let logger: Logger
    /// Responses a connection may owe before it stops reading (its pipelining window).
    public let maxPendingResponses: Int
    /// Bytes of answers a connection may owe before it stops taking lines
    /// (`ingest.max_unanswered_bytes`; docs/SERVICE.md, Resource bounds).
    public let maxAnswerBytes: Int
    public let maxRecordBytes: Int
    public let state: ServerState

    public init(
        wal: WriteAheadLog, config: SinkdConfig, logger: Logger, state: ServerState, maxPendingResponses: Int = 4096
    ) {
        self.wal = wal
        self.sinksBox = NIOLockedValueBox(config.sinks)
        self.configPath = config.sourcePath
        self.whenFull = config.wal.whenFull
        self.maxRecordBytes = config.ingest.maxRecordBytes
        self.logger = logger
        self.state = state
        self.maxPendingResponses = maxPendingResponses
        self.maxAnswerBytes = config.ingest.maxUnansweredBytes
    }

    /// A reload: records read from now on are checked against `sinks`.
    public func updateSinks(_ sinks: SinksConfig) {
        sinksBox.withLockedValue { $0 = sinks }
        generation.add(1, ordering: .releasing)
    }
}
