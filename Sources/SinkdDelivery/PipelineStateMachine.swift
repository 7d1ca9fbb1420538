import SinkdCore

/// The delivery logic of one sink, free of I/O: records go in, batches to send come out,
/// outcomes go in, records to mark finished and to dead-letter come out. Times are milliseconds;
/// randomness (for jitter) is passed in. The runner (`SinkPipeline`) only executes actions.
///
/// - Batches respect the family's limits (count, bytes); a record larger than the message limit
///   is dead-lettered without being sent.
/// - Relaxed ordering: first attempts leave in WAL order; a record waiting for its retry is
///   overtaken. Strict ordering: one batch in flight, and a failing record stays at the head
///   (nothing overtakes it).
/// - A connection failure pauses the whole sink with reconnect backoff; no record spends an
///   attempt on it, and until a batch succeeds again only one batch is in flight (a probe). With
///   relaxed ordering each probe starts one record further, so a record that breaks the
///   connection every time cannot pin the sink (strict ordering keeps the head first, by design).
public struct PipelineStateMachine: Sendable {
    public struct Item: Sendable, Equatable {
        public var entry: SequencedRecord
        public var attempts = 0
        public var firstAttemptMillis: UInt64?
        public var lastAttemptMillis: UInt64?
        public var notBefore: UInt64 = 0
        public var lastError: String?

        public var seq: UInt64 { entry.seq }
        var bytes: Int { entry.record.payload.count }
    }

    public struct Settings: Sendable {
        public var limits: SinkLimits
        public var maxInFlight: Int
        public var ordering: OrderingMode
        public var retry: RetrySchedule
        /// Backoff between reconnection attempts after a connection failure.
        public var reconnect: RetrySchedule
        /// Records held in memory (waiting + in flight) before the pipeline stops reading the WAL.
        public var bufferLimit: Int
        /// Payload bytes held in memory before the pipeline stops reading
        /// (`delivery.max_held_bytes_per_sink`).
        public var byteLimit: Int
        /// Milliseconds a batch that is not full waits for more records while another batch is in
        /// flight (`linger`; 0: never). Nothing in flight: it leaves at once.
        public var lingerMillis: UInt64

        public init(limits: SinkLimits, options: PipelineOptions, byteLimit: Int = .max) {
            self.byteLimit = byteLimit
            self.limits = limits
            self.maxInFlight =
                options.ordering == .strict ? 1 : max(1, limits.maxBatchesInFlight ?? options.maxInFlight)
            self.ordering = options.ordering
            self.retry = RetrySchedule(options.retry)
            var reconnectPolicy = RetryPolicy()
            reconnectPolicy.initialBackoff = .milliseconds(500)
            reconnectPolicy.maxBackoff = .seconds(30)
            self.reconnect = RetrySchedule(reconnectPolicy)
            self.bufferLimit = max(1000, 2 * limits.maxBatchCount * self.maxInFlight)
            self.lingerMillis = UInt64(max(0, options.linger.milliseconds))
        }
    }

    public enum Health: Sendable, Equatable {
        case up
        /// Connection-level failure; paused until the next reconnect attempt.
        case down(String)
    }

    public enum Action: Sendable, Equatable {
        case send(batchID: UInt64, records: [SequencedRecord])
        /// Nothing to do before this time (nil: before an event: new records or a completion).
        case wait(untilMillis: UInt64?)
    }

    public struct DeadLetter: Sendable, Equatable {
        public var item: Item
        public var reason: String
    }

    /// What an event changed, for the runner to carry out: dead letters first (durably), then
    /// `finished` (delivered or dead-lettered) goes to the WAL's progress.
    public struct Effects: Sendable, Equatable {
        public var finished: [UInt64] = []
        public var deadLetters: [DeadLetter] = []
        public var delivered = 0
        /// When each delivered record was accepted (for the delivery latency).
        public var deliveredAcceptedAt: [UInt64] = []
        public var retried = 0
        /// Set when the health changed (log it once).
        public var healthChanged: Health?
    }

    public let settings: Settings
    /// The arrays of the last completion's effects, returned by `recycle` for the next one.
    private var spareFinished: [UInt64] = []
    private var spareAcceptedAt: [UInt64] = []
    static let maxSpareCount = 4096
    /// Records not in flight, in seq order: `queue[head...]`. Taking a batch from the front moves
    /// `head` instead of shifting the whole buffer (thousands of items) once per batch.
    private var queue: [Item] = []
    private var head = 0
    public var waiting: ArraySlice<Item> { queue[head...] }
    public private(set) var inFlight: [UInt64: [Item]] = [:]
    public private(set) var health: Health = .up
    private var nextBatchID: UInt64 = 1
    private var pausedUntil: UInt64?
    private var connectionFailures = 0
    /// The first batch sent after the sink went down: only its answer (or a later one's) shows
    /// that the connection works again. A batch already in flight when the sink went down may
    /// still complete (another pooled connection, a late answer) and proves nothing: taking it
    /// as "up again" made the log repeat down/up pairs within a millisecond under a stalled server.
    private var firstBatchSinceDown: UInt64 = 0
    /// When the batch now waiting for company (linger) was first found not full.
    private var lingeringSince: UInt64?

    public init(settings: Settings) {
        self.settings = settings
    }

    public var heldRecords: Int { waiting.count + inFlight.values.reduce(0) { $0 + $1.count } }
    /// Payload bytes of the records held (waiting or in flight).
    public private(set) var heldBytes = 0
    /// Whether the pipeline should read more of the WAL. While the sink is down it holds at most
    /// one batch, what its next attempt sends: reading its whole window would only keep records in
    /// memory (the soak saw a down Kafka sink hold 32 MiB) and in the progress file's outstanding set
    /// (each checkpoint encoding tens of thousands of seqs) until the broker is back.
    public var wantsRecords: Bool {
        var limit = settings.bufferLimit
        if case .down = health { limit = max(1, settings.limits.maxBatchCount) }
        return heldRecords < limit && heldBytes < settings.byteLimit
    }
    /// How many bytes the next read may bring (at least one record's worth: a pipeline holding
    /// nothing always takes its next record, however large).
    public var bytesWanted: Int { max(1, settings.byteLimit - heldBytes) }
    public var isIdle: Bool { head == queue.count && inFlight.isEmpty }
    public var inFlightRecords: Int { inFlight.values.reduce(0) { $0 + $1.count } }

    /// New records from the WAL, in seq order. Oversized ones are dead-lettered at once.
    public mutating func add(_ records: [SequencedRecord]) -> Effects {
        var effects = Effects()
        for r in records {
            let item = Item(entry: r)
            if r.record.payload.count > settings.limits.maxMessageBytes {
                effects.deadLetters.append(
                    DeadLetter(
                        item: item,
                        reason:
                            "the message is \(r.record.payload.count) bytes; this sink takes at most \(settings.limits.maxMessageBytes)"
                    ))
                effects.finished.append(r.seq)
                continue
            }
            heldBytes += item.bytes
            insert(item)
        }
        return effects
    }

    /// The next thing to do at `now`.
    public mutating func next(now: UInt64) -> Action {
        if let until = pausedUntil {
            if now < until { return .wait(untilMillis: until) }
            pausedUntil = nil
        }
        let maxInFlight = health == .up ? settings.maxInFlight : 1
        guard inFlight.count < maxInFlight, !waiting.isEmpty else { return .wait(untilMillis: nil) }
        // Usually one run from the front: no heap call for it.
        var picked = IncreasingRun<Int>()
        var bytes = 0
        var earliest: UInt64?
        // While down, the probe starts one record further at each failure (relaxed ordering):
        // a record that itself breaks the connection can never pin the sink.
        var start = head
        if health != .up, settings.ordering == .relaxed, queue.count - head > 1 {
            start = head + connectionFailures % (queue.count - head)
        }
        var full = false
        for index in start..<queue.count {
            let item = queue[index]
            guard item.notBefore <= now else {
                earliest = min(earliest ?? item.notBefore, item.notBefore)
                if settings.ordering == .strict { break }  // nothing overtakes the head
                continue
            }
            if !picked.isEmpty, bytes + item.bytes > settings.limits.maxBatchBytes {
                full = true
                break
            }
            picked.append(index)
            bytes += item.bytes
            if picked.count == settings.limits.maxBatchCount {
                full = true
                break
            }
        }
        if picked.isEmpty, start > head {
            // Nothing eligible from the rotated start: probe from the front after all.
            for index in head..<start {
                let item = queue[index]
                guard item.notBefore <= now else {
                    earliest = min(earliest ?? item.notBefore, item.notBefore)
                    continue
                }
                if !picked.isEmpty, bytes + item.bytes > settings.limits.maxBatchBytes { break }
                picked.append(index)
                bytes += item.bytes
                if picked.count == settings.limits.maxBatchCount { break }
            }
        }
        guard !picked.isEmpty else { return .wait(untilMillis: earliest) }
        // Linger: while batches are in flight (healthy), one that is not full waits up to
        // `lingerMillis` for more records; a completion or new records look again.
        if settings.lingerMillis > 0, !full, !inFlight.isEmpty, health == .up {
            let since = lingeringSince ?? now
            lingeringSince = since
            let until = since + settings.lingerMillis
            if now < until { return .wait(untilMillis: earliest.map { min($0, until) } ?? until) }
        }
        lingeringSince = nil
        var batch: [Item] = []
        batch.reserveCapacity(picked.count)
        for index in picked {
            var item = queue[index]
            item.firstAttemptMillis = item.firstAttemptMillis ?? now
            item.lastAttemptMillis = now
            batch.append(item)
        }
        if picked.isRun(from: head) {
            // The usual case, a run from the front: move the head; compact now and then.
            head += picked.count
            if head == queue.count {
                queue.removeAll(keepingCapacity: true)
                head = 0
            } else if head >= 1024, head * 2 >= queue.count {
                queue.removeFirst(head)
                head = 0
            }
        } else {
            // One pass, never one shift per picked record.
            var keep: [Item] = []
            keep.reserveCapacity(queue.count - head - picked.count)
            var pickedIndices = picked.makeIterator()
            var nextPicked = pickedIndices.next()
            for index in head..<queue.count {
                if index == nextPicked {
                    nextPicked = pickedIndices.next()
                } else {
                    keep.append(queue[index])
                }
            }
            queue = keep
            head = 0
        }
        let id = nextBatchID
        nextBatchID += 1
        inFlight[id] = batch
        return .send(batchID: id, records: batch.map(\.entry))
    }

    /// The broker answered a batch, one outcome per record. `random` gives numbers in [0, 1).
    public mutating func completed(
        batchID: UInt64, outcomes: [DeliveryOutcome], now: UInt64, random: () -> Double
    ) -> Effects {
        guard let batch = inFlight.removeValue(forKey: batchID) else { return Effects() }
        var effects = Effects()
        effects.finished = takeSpare(&spareFinished)
        effects.deliveredAcceptedAt = takeSpare(&spareAcceptedAt)
        if batchID >= firstBatchSinceDown {
            if case .down = health {
                health = .up
                effects.healthChanged = .up
            }
            connectionFailures = 0
        }
        var retries: [Item] = []
        for (index, var item) in batch.enumerated() {
            let outcome =
                index < outcomes.count ? outcomes[index] : .retryable("the sink returned no outcome for this record")
            switch outcome {
            case .delivered:
                heldBytes -= item.bytes
                effects.finished.append(item.seq)
                effects.delivered += 1
                effects.deliveredAcceptedAt.append(item.entry.record.acceptedAtMillis)
            case .permanent(let reason):
                heldBytes -= item.bytes
                item.attempts += 1
                item.lastError = reason
                effects.deadLetters.append(DeadLetter(item: item, reason: reason))
                effects.finished.append(item.seq)
            case .retryable(let reason, let retryAfter):
                item.attempts += 1
                item.lastError = reason
                if settings.retry.isExhausted(
                    attempts: item.attempts, firstAttemptMillis: item.firstAttemptMillis ?? now, nowMillis: now)
                {
                    heldBytes -= item.bytes
                    effects.deadLetters.append(
                        DeadLetter(item: item, reason: "gave up after \(item.attempts) attempts: \(reason)"))
                    effects.finished.append(item.seq)
                } else {
                    let delay = settings.retry.delay(
                        afterAttempts: item.attempts, unit: random(), retryAfter: retryAfter)
                    item.notBefore = now + UInt64(max(0, delay.milliseconds))
                    retries.append(item)
                    effects.retried += 1
                }
            }
        }
        insert(retries)
        return effects
    }

    /// Takes back the arrays of effects that were applied, for the next completion's (two heap
    /// calls per batch otherwise).
    public mutating func recycle(_ effects: inout Effects) {
        keepForReuse(&effects.finished, as: &spareFinished, maxCapacity: Self.maxSpareCount)
        keepForReuse(&effects.deliveredAcceptedAt, as: &spareAcceptedAt, maxCapacity: Self.maxSpareCount)
    }

    /// The connection failed while sending a batch: its records wait again without spending an
    /// attempt, and the sink pauses before reconnecting.
    public mutating func connectionFailed(batchID: UInt64, error: String, now: UInt64, random: () -> Double) -> Effects
    {
        var effects = Effects()
        if var batch = inFlight.removeValue(forKey: batchID) {
            for i in batch.indices { batch[i].lastError = error }
            insert(batch)
        }
        connectionFailures += 1
        let delay = settings.reconnect.delay(afterAttempts: connectionFailures, unit: 0.5 + random() / 2)
        pausedUntil = max(pausedUntil ?? 0, now + UInt64(max(0, delay.milliseconds)))
        if health == .up {
            effects.healthChanged = .down(error)
            firstBatchSinceDown = nextBatchID
        }
        health = .down(error)
        return effects
    }

    /// Takes back every waiting record (shutdown or removal): they stay unfinished in the WAL.
    public mutating func drainWaiting() -> [Item] {
        defer {
            queue.removeAll()
            head = 0
        }
        for item in waiting { heldBytes -= item.bytes }
        return Array(waiting)
    }

    /// Puts records back (a failed batch, retries), in one pass over the queue: inserting them one
    /// by one shifted the whole queue per record (a batch of 1,000 back into 32,000 held records
    /// moved gigabytes; under an outage every failed probe did).
    private mutating func insert(_ items: [Item]) {
        guard items.count > 1 else {
            if let item = items.first { insert(item) }
            return
        }
        var back = items
        if !zip(back, back.dropFirst()).allSatisfy({ $0.seq < $1.seq }) { back.sort { $0.seq < $1.seq } }
        if head >= back.count, head == queue.count || back.last!.seq < queue[head].seq {
            // The usual case: the batch came from the front, whose slots are still free.
            head -= back.count
            queue.replaceSubrange(head..<(head + back.count), with: back)
            return
        }
        var merged: [Item] = []
        merged.reserveCapacity(queue.count - head + back.count)
        var i = head
        var j = 0
        while i < queue.count, j < back.count {
            if queue[i].seq < back[j].seq {
                merged.append(queue[i])
                i += 1
            } else {
                merged.append(back[j])
                j += 1
            }
        }
        merged.append(contentsOf: queue[i...])
        merged.append(contentsOf: back[j...])
        queue = merged
        head = 0
    }

    private mutating func insert(_ item: Item) {
        // Binary search by seq: records come back from retries out of order.
        var low = head
        var high = queue.count
        while low < high {
            let mid = (low + high) / 2
            if queue[mid].seq < item.seq { low = mid + 1 } else { high = mid }
        }
        if low == head, head > 0 {
            head -= 1  // a new front: reuse the slot the last batch left
            queue[head] = item
        } else {
            queue.insert(item, at: low)
        }
    }
}
