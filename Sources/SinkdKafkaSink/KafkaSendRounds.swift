import SinkdDelivery

/// One `send`'s rounds, I/O-free (KafkaTopicClient.send executes them): the parts still to
/// produce per partition, in WAL order, what each part's answer means for it, the records'
/// outcomes, and when to give up. Each round sends the first part of every partition once.
///
/// Invariants:
/// - A partition's parts go one at a time, in WAL order: a later part waits until the one before
///   it is acknowledged, split, or settled for good.
/// - A part keeps its sequences (`base`, `generation`) until acknowledged, unless its producer is
///   gone (`anew`, a new generation), its records changed (some refused for good), or it was split
///   (the second half takes the sequence after the first's).
/// - Every record ends with exactly one outcome; one still unsent when the send gives up (the
///   delivery deadline) is retryable, never lost.
struct KafkaSendRounds {
    typealias Part = KafkaTopicClient.Part
    typealias PartAnswer = KafkaTopicClient.PartAnswer

    let topic: String
    private(set) var queues: [Int32: [Part]] = [:]
    private(set) var outcomes: [DeliveryOutcome?]
    private(set) var lastError = ""
    /// The next round waits a moment first (the broker asked for it, or had no leader).
    private(set) var backoff = false
    /// The next round asks for the topic's metadata again.
    private(set) var refresh = false
    private(set) var round = 0

    /// `parts`: per partition, its records' indices cut into parts (within max.message.bytes).
    init(topic: String, records: Int, parts: [Int32: [[Int]]]) {
        self.topic = topic
        outcomes = Array(repeating: nil, count: records)
        for (partition, chunks) in parts {
            queues[partition] = chunks.map { Part(partition: partition, indices: $0) }
        }
    }

    var hasWork: Bool { queues.values.contains { !$0.isEmpty } }

    enum Start: Equatable {
        /// Send this round (after a backoff of `backoffMillis` when nonzero).
        case send(backoffMillis: Int)
        /// The delivery deadline passed: every record not settled is retryable.
        case gaveUp
    }

    /// The next round begins: `deadlinePassed` says whether the delivery deadline is behind.
    mutating func startRound(deadlinePassed: Bool) -> Start {
        round += 1
        if round > 1, deadlinePassed {
            for part in queues.values.joined() {
                for i in part.indices where outcomes[i] == nil { outcomes[i] = .retryable("kafka: \(lastError)") }
            }
            return .gaveUp
        }
        let wait = backoff ? min(1000, 25 << min(round, 5)) : 0
        backoff = false
        refresh = false
        return .send(backoffMillis: wait)
    }

    /// The partitions whose first part goes this round, in order; a part handed sequences under
    /// an older producer than `generation` gets new ones.
    mutating func heads(generation: Int) -> [Int32] {
        var heads: [Int32] = []
        for partition in queues.keys.sorted() where !(queues[partition]!.isEmpty) {
            if queues[partition]![0].generation != generation { queues[partition]![0].base = nil }
            heads.append(partition)
        }
        return heads
    }

    func head(_ partition: Int32) -> Part { queues[partition]![0] }

    /// The partition has no leader now: metadata again, after a moment.
    mutating func noLeader(_ partition: Int32) {
        lastError = "no leader for partition \(partition) of \(topic)"
        refresh = true
        backoff = true
    }

    /// The head part of `partition` was handed sequences from `base` under `generation`.
    mutating func assigned(_ partition: Int32, base: Int32, generation: Int) {
        queues[partition]![0].base = base
        queues[partition]![0].generation = generation
    }

    /// The head part's producer is gone before it could be sent again: sequences anew.
    mutating func producerGone(_ partition: Int32) {
        queues[partition]![0].base = nil
    }

    /// A request carrying these partitions' heads failed as a whole (no answer, a broken
    /// connection): each is sent again with its sequences.
    mutating func requestFailed(_ partitions: [Int32], error: String) throws(SinkConnectionError) {
        for partition in partitions {
            try apply(.resend(reason: error, refresh: true, backoff: true), to: partition)
        }
    }

    /// What `partition`'s head part's answer says. Throws when the broker refuses the topic
    /// itself (the sink pauses).
    mutating func apply(_ answer: PartAnswer, to partition: Int32) throws(SinkConnectionError) {
        var part = queues[partition]![0]
        switch answer {
        case .delivered:
            for i in part.indices { outcomes[i] = .delivered }
            queues[partition]!.removeFirst()
        case .resend(let reason, let refreshMetadata, let wait):
            lastError = "partition \(partition): \(reason)"
            refresh = refresh || refreshMetadata
            backoff = backoff || wait
        case .split(let second, let reason):
            lastError = "partition \(partition): \(reason)"
            let half = part.indices.count / 2
            var rest = part
            rest.indices = Array(part.indices[half...])
            rest.base = second
            part.indices = Array(part.indices[..<half])
            queues[partition]!.replaceSubrange(0...0, with: [part, rest])
        case .permanent(let indices, let reason):
            let refused = Set(indices.map { part.indices[$0] })
            for i in refused { outcomes[i] = .permanent("kafka topic \(topic) partition \(partition): \(reason)") }
            part.indices = part.indices.filter { !refused.contains($0) }
            part.base = nil
            if part.indices.isEmpty { queues[partition]!.removeFirst() } else { queues[partition]![0] = part }
        case .anew(let reason):
            lastError = "partition \(partition): \(reason)"
            queues[partition]![0].base = nil
        case .pause(let reason):
            throw SinkConnectionError("kafka refused producing to \(topic): \(reason)")
        }
    }

    /// Parts handed sequences and not acknowledged (the send ends): each leaves a gap in its
    /// partition's sequences that the producer cannot cross.
    var unacknowledged: [Part] { queues.values.joined().filter { $0.base != nil } }

    /// Every record's outcome; one never settled is retryable.
    var finalOutcomes: [DeliveryOutcome] { outcomes.map { $0 ?? .retryable("kafka: not sent") } }
}
