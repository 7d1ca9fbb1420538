/// The idempotent producer's bookkeeping and what to do with each partition's answer, I/O-free.
///
/// Kafka's rules (KIP-98): a producer id and epoch from InitProducerId; per partition a sequence
/// number, the base sequence of a batch being the next one the broker expects. The broker stores a
/// batch only when its base sequence is the next; one it has already stored is answered
/// DUPLICATE_SEQUENCE_NUMBER (or success), a gap OUT_OF_ORDER_SEQUENCE_NUMBER. So a batch
/// retried with the same sequence is never stored twice, and sequences advance only on the
/// broker's acknowledgement. sinkd sends one batch at a time per partition (a lock per
/// partition), so the next sequence is always "acknowledged so far".
public struct KafkaProducerState: Sendable, Equatable {
    public struct PartitionKey: Sendable, Hashable, Comparable {
        public var topic: String
        public var partition: Int32
        public init(topic: String, partition: Int32) {
            self.topic = topic
            self.partition = partition
        }
        public static func < (a: Self, b: Self) -> Bool { (a.topic, a.partition) < (b.topic, b.partition) }
    }

    public private(set) var producerID: Int64 = -1
    public private(set) var epoch: Int16 = -1
    /// Bumped by every new producer id: an answer about an older one does not reset again.
    public private(set) var generation = 0
    private var next: [PartitionKey: Int32] = [:]

    public init() {}

    public var hasProducer: Bool { producerID >= 0 }

    /// A new producer id: every sequence starts again at 0.
    public mutating func reset(producerID: Int64, epoch: Int16) {
        self.producerID = producerID
        self.epoch = epoch
        generation += 1
        next = [:]
    }

    /// Forget the producer (its sequences are unknown after an unanswered batch); the next send
    /// asks for a new one.
    public mutating func invalidate(generation g: Int) {
        guard g == generation else { return }
        producerID = -1
        epoch = -1
        next = [:]
    }

    public func producer(for key: PartitionKey) -> KafkaRecordBatch.Producer {
        KafkaRecordBatch.Producer(id: producerID, epoch: epoch, baseSequence: next[key] ?? 0)
    }

    /// The broker acknowledged `count` records from `baseSequence`; sequences wrap at Int32.max
    /// as Kafka's do.
    public mutating func acknowledged(_ key: PartitionKey, baseSequence: Int32, count: Int, generation g: Int) {
        guard g == generation else { return }
        let after = (Int64(baseSequence) + Int64(count)) % (Int64(Int32.max) + 1)
        next[key] = Int32(after)
    }
}

/// What to do with one partition's answer to a Produce.
public enum KafkaProduceDecision: Sendable, Equatable {
    case delivered
    /// Send the same batch again (same sequence), after a metadata refresh when asked.
    case retry(refreshMetadata: Bool, reason: String)
    /// Get a new producer id, then send again (sequences from 0).
    case resetProducer(reason: String)
    /// Too large as a batch: send it in halves (its sequences were not used).
    case split(reason: String)
    /// These records (indices in the batch) can never be stored; the others are sent again.
    case permanent(indices: [Int], reason: String)
    /// Refused authorization: the sink pauses.
    case pause(reason: String)

    public static func decide(errorCode: Int16, count: Int, recordErrors: [Int32], message: String?) -> KafkaProduceDecision {
        let reason = KafkaErrorCode.name(errorCode) + (message.map { ": \($0)" } ?? "")
        switch KafkaErrorCode.kind(errorCode) {
        case .none, .duplicate:
            return .delivered
        case .retriable(let refresh):
            return .retry(refreshMetadata: refresh, reason: reason)
        case .resetProducer:
            return .resetProducer(reason: reason)
        case .refused:
            return .pause(reason: reason)
        case .permanent:
            if (errorCode == 10 || errorCode == 18), count > 1 { return .split(reason: reason) }
            let named = recordErrors.map(Int.init).filter { $0 >= 0 && $0 < count }
            return .permanent(indices: named.isEmpty ? Array(0..<count) : named, reason: reason)
        }
    }
}
