/// The idempotent producer's bookkeeping, I/O-free.
///
/// Kafka's rules (KIP-98): a producer id and epoch from InitProducerId; per partition a sequence
/// number, the base sequence of a batch being the one after the previous batch's. The broker stores
/// a batch only when its base sequence is the next it expects; one it has already stored is
/// answered DUPLICATE_SEQUENCE_NUMBER (or success), a gap OUT_OF_ORDER_SEQUENCE_NUMBER; it
/// remembers the last 5 batches per partition for that. So up to `windowSize` batches per
/// partition are on the wire at once, each handed its sequences when it is written (in write
/// order); a batch retried with the same sequences is stored once.
///
/// When a batch fails (an error answer, or no answer), the broker refuses every later one of the
/// partition as out of order until it has that batch: the failed batches are sent again in sequence
/// order, each only once it is the first of its partition still unacknowledged (`isFirst`), and no
/// new batch is handed sequences on a partition with a failed batch waiting. A batch that will never
/// be sent again with its sequences (records refused for good, a send given up) leaves a gap no later
/// batch can cross: the producer is dropped (`invalidate`) and the next batch asks for a new id,
/// whose sequences start at 0.
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

    /// Batches on the wire per partition at once: the broker's deduplication window (5 batches).
    public static let windowSize = 5

    /// One partition: the next sequence to hand out, and the batches handed sequences and not yet
    /// acknowledged, in sequence order.
    struct Window: Sendable, Equatable {
        var next: Int32 = 0
        var open: [Batch] = []
    }

    struct Batch: Sendable, Equatable {
        var base: Int32
        var count: Int
        /// Its last answer said it was not stored (or none came): it waits to be sent again.
        var failed = false
        /// When written, an earlier batch of its partition was unacknowledged: an
        /// OUT_OF_ORDER_SEQUENCE_NUMBER then means "that one first", not a broker that lost track.
        var followed = false
    }

    public private(set) var producerID: Int64 = -1
    public private(set) var epoch: Int16 = -1
    /// Bumped by every new producer id and every drop: anything about an older one changes nothing.
    public private(set) var generation = 0
    private var windows: [PartitionKey: Window] = [:]

    public init() {}

    public var hasProducer: Bool { producerID >= 0 }

    /// A new producer id: every sequence starts again at 0.
    public mutating func reset(producerID: Int64, epoch: Int16) {
        self.producerID = producerID
        self.epoch = epoch
        generation += 1
        windows = [:]
    }

    /// Drops the producer (a gap in its sequences, or a broker that lost track of it); the next
    /// batch asks for a new one. Every batch of `generation` is then sent again under the new one.
    public mutating func invalidate(generation g: Int) {
        guard g == generation, hasProducer else { return }
        producerID = -1
        epoch = -1
        generation += 1
        windows = [:]
    }

    /// Whether a new batch may be handed sequences on every one of `keys` now.
    public func hasRoom(_ keys: [PartitionKey]) -> Bool {
        hasProducer
            && keys.allSatisfy { key in
                let w = windows[key] ?? Window()
                return w.open.count < Self.windowSize && !w.open.contains(where: \.failed)
            }
    }

    /// Hands `count` sequences on `key` to a batch about to be written; its producer fields.
    public mutating func reserve(_ key: PartitionKey, count: Int) -> KafkaRecordBatch.Producer {
        var w = windows[key] ?? Window()
        let base = w.next
        w.open.append(Batch(base: base, count: count, followed: !w.open.isEmpty))
        w.next = Self.advance(base, by: count)
        windows[key] = w
        return KafkaRecordBatch.Producer(id: producerID, epoch: epoch, baseSequence: base)
    }

    /// The producer fields of the batch at `base` (to send it again).
    public func producer(base: Int32) -> KafkaRecordBatch.Producer {
        KafkaRecordBatch.Producer(id: producerID, epoch: epoch, baseSequence: base)
    }

    /// The sequence the next new batch on `key` would get.
    public func nextSequence(_ key: PartitionKey) -> Int32 { windows[key]?.next ?? 0 }

    /// Whether the batch at `base` is the first unacknowledged one of its partition: its turn to be
    /// sent again. False too when it is not open (any more) under `generation`.
    public func isFirst(_ key: PartitionKey, base: Int32, generation g: Int) -> Bool {
        g == generation && windows[key]?.open.first?.base == base
    }

    /// Whether the batch at `base` is open (handed sequences, not acknowledged) under `generation`.
    public func isOpen(_ key: PartitionKey, base: Int32, generation g: Int) -> Bool {
        g == generation && windows[key]?.open.contains(where: { $0.base == base }) == true
    }

    /// Whether an earlier batch was unacknowledged when the batch at `base` was written.
    public func wasFollowing(_ key: PartitionKey, base: Int32, generation g: Int) -> Bool {
        g == generation && windows[key]?.open.first(where: { $0.base == base })?.followed == true
    }

    /// The broker stored the batch at `base`.
    public mutating func acknowledged(_ key: PartitionKey, base: Int32, generation g: Int) {
        guard g == generation else { return }
        windows[key]?.open.removeAll { $0.base == base }
    }

    /// The batch at `base` was not stored (or its answer never came): it waits to be sent again.
    public mutating func failed(_ key: PartitionKey, base: Int32, generation g: Int) {
        guard g == generation, let i = windows[key]?.open.firstIndex(where: { $0.base == base }) else { return }
        windows[key]!.open[i].failed = true
    }

    /// The batch at `base` is being sent again (as the first of its partition).
    public mutating func resending(_ key: PartitionKey, base: Int32, generation g: Int) {
        guard g == generation, let i = windows[key]?.open.firstIndex(where: { $0.base == base }) else { return }
        windows[key]!.open[i].failed = false
        windows[key]!.open[i].followed = false
    }

    /// The batch at `base` was too large and goes in two: its first `firstCount` records keep
    /// `base`, the others take the sequences after them (the same range: later batches stay
    /// valid). Both wait to be sent, in order. Returns the second half's base.
    public mutating func split(_ key: PartitionKey, base: Int32, firstCount: Int, generation g: Int) -> Int32? {
        guard g == generation, let i = windows[key]?.open.firstIndex(where: { $0.base == base }) else { return nil }
        let whole = windows[key]!.open[i]
        guard firstCount > 0, firstCount < whole.count else { return nil }
        let second = Self.advance(base, by: firstCount)
        windows[key]!.open.replaceSubrange(
            i...i,
            with: [
                Batch(base: base, count: firstCount, failed: true),
                Batch(base: second, count: whole.count - firstCount, failed: true),
            ])
        return second
    }

    /// For tests: `count` sequences on `key` handed to nothing (a gap the broker refuses).
    mutating func skip(_ key: PartitionKey, count: Int) {
        var w = windows[key] ?? Window()
        w.next = Self.advance(w.next, by: count)
        windows[key] = w
    }

    /// Sequences wrap at Int32.max, as Kafka's do.
    static func advance(_ base: Int32, by count: Int) -> Int32 {
        Int32((Int64(base) + Int64(count)) % (Int64(Int32.max) + 1))
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

    public static func decide(
        errorCode: Int16, count: Int, recordErrors: [Int32], message: String?
    ) -> KafkaProduceDecision {
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
