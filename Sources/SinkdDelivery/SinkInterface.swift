import NIOConcurrencyHelpers
import SinkdCore

/// What happened to one record of a batch.
public enum DeliveryOutcome: Sendable, Equatable {
    /// The broker confirmed it.
    case delivered
    /// Try again later (after `retryAfter` when the broker said so).
    case retryable(String, retryAfter: Duration? = nil)
    /// It can never be delivered (too large, unroutable, refused): dead-letter it.
    case permanent(String)
}

/// A failure of the connection rather than of a record: the broker is down, refused the
/// credentials, or the connection broke. The whole sink pauses and reconnects with backoff;
/// no record spends an attempt on it.
public struct SinkConnectionError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// What a sink family can take at once.
public struct SinkLimits: Sendable, Equatable {
    public var maxBatchCount: Int
    public var maxBatchBytes: Int
    /// A larger single message is a permanent error without being sent.
    public var maxMessageBytes: Int
    /// Batches outstanding at once; nil means the sink's `max_in_flight`. Families whose
    /// `max_in_flight` counts messages (NATS, AMQP) derive it from the batch size.
    public var maxBatchesInFlight: Int?

    public init(maxBatchCount: Int, maxBatchBytes: Int, maxMessageBytes: Int, maxBatchesInFlight: Int? = nil) {
        self.maxBatchCount = maxBatchCount
        self.maxBatchBytes = maxBatchBytes
        self.maxMessageBytes = maxMessageBytes
        self.maxBatchesInFlight = maxBatchesInFlight
    }

    /// Limits for a family whose `max_in_flight` counts unacknowledged messages: batches of at
    /// most `batch_size` and never more than `max_in_flight` messages, and as many batches as
    /// fit in that window.
    public static func messageWindow(_ options: PipelineOptions, maxBatchBytes: Int, maxMessageBytes: Int) -> SinkLimits
    {
        let count = max(1, min(options.batchSize, options.maxInFlight))
        return SinkLimits(
            maxBatchCount: count, maxBatchBytes: maxBatchBytes, maxMessageBytes: maxMessageBytes,
            maxBatchesInFlight: max(1, options.maxInFlight / count))
    }
}

/// One sink's connection(s) to its broker, owned by the sink's pipeline.
public protocol SinkClient: Sendable {
    /// Sends a batch; returns one outcome per record, in order. Throws `SinkConnectionError`
    /// when the connection itself failed (nothing in the batch counts as attempted).
    func send(_ batch: [SequencedRecord]) async throws(SinkConnectionError) -> [DeliveryOutcome]
    /// The same, calling `queued` once the batch's bytes are queued on its connection (or the send
    /// failed before that). The pipeline starts its next send only then, so batches pipelined on
    /// one connection reach the broker in WAL order (issue 20, item 9). The default calls it at
    /// once: clients over several connections keep no order between batches anyway.
    func send(
        _ batch: [SequencedRecord], queued: @escaping @Sendable () -> Void
    ) async throws(SinkConnectionError) -> [DeliveryOutcome]
    /// Closes the connections (the pipeline is idle, removed, or sinkd stops).
    func close() async
}

extension SinkClient {
    public func send(
        _ batch: [SequencedRecord], queued: @escaping @Sendable () -> Void
    ) async throws(SinkConnectionError) -> [DeliveryOutcome] {
        queued()
        return try await send(batch)
    }
}

/// A sink family (`file`, `http`, `redis`, ...): makes the client of each of its sinks. A class:
/// a reload keeps the running instance of an unchanged family (identity tells them apart).
public protocol SinkFamily: AnyObject, Sendable {
    var name: ConfigFamily { get }
    /// The limits for a sink of this family, given the configured pipeline options.
    func limits(for address: SinkAddress, options: PipelineOptions) -> SinkLimits
    func makeClient(for address: SinkAddress, options: PipelineOptions) throws(SinkConnectionError) -> any SinkClient
    /// Releases what the family shares between its sinks (a connection pool), at daemon stop.
    func shutdown() async
}

extension SinkFamily {
    public func shutdown() async {}
}
