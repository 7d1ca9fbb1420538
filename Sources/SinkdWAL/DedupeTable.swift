/// The (sink, id) pairs accepted recently, for answering `duplicate` with the original seq.
///
/// Bounded two ways: at most `maxEntries` keys (the oldest is forgotten first) and at most
/// `window` old (by acceptance time). Memory is 24 bytes per entry in insertion order plus a
/// 4-byte open-addressing index slot per half entry (about 32 MiB at a million entries), grown on
/// demand. Entries are never returned once older than the window.
public struct DedupeTable: Sendable {
    struct Entry {
        var key: DedupeKey
        /// 0 marks an entry removed before its turn to expire.
        var seq: UInt64
    }

    public let maxEntries: Int
    public let windowMillis: UInt64
    private var ring: [Entry] = []
    /// Absolute insertion number of ring's oldest live position, and of the next insertion.
    private var head: UInt64 = 0
    private var tail: UInt64 = 0
    /// Linear-probing index: slot holds (ring position % ring.count) + 1, 0 = empty.
    private var index: [UInt32] = []
    /// Acceptance time marks, one per distinct second: (millis, first seq accepted then).
    private var timeMarks: [(millis: UInt64, seq: UInt64)] = []
    private var timeMarksHead = 0

    public init(maxEntries: Int, window: Duration) {
        self.maxEntries = maxEntries
        self.windowMillis = UInt64(max(0, window.milliseconds))
    }

    public var count: Int { Int(tail - head) }

    /// The seq of the live entry for `key`, if it was accepted within the window.
    public mutating func lookUp(_ key: DedupeKey, now: UInt64) -> UInt64? {
        guard maxEntries > 0, !index.isEmpty else { return nil }
        expire(now: now)
        var slot = Int(truncatingIfNeeded: key.a) & (index.count - 1)
        while index[slot] != 0 {
            let entry = ring[Int(index[slot] - 1)]
            if entry.key == key, entry.seq != 0 { return entry.seq }
            slot = (slot + 1) & (index.count - 1)
        }
        return nil
    }

    /// Remembers `key` as accepted with `seq` at `now` (milliseconds). Seqs must grow.
    public mutating func insert(_ key: DedupeKey, seq: UInt64, now: UInt64) {
        guard maxEntries > 0, seq != 0 else { return }
        if timeMarks.count == timeMarksHead || now / 1000 != timeMarks[timeMarks.count - 1].millis / 1000 {
            timeMarks.append((now, seq))
        }
        if count == maxEntries { evictOldest() }
        growIfNeeded()
        let position = Int(tail % UInt64(ring.count))
        ring[position] = Entry(key: key, seq: seq)
        tail += 1
        var slot = Int(truncatingIfNeeded: key.a) & (index.count - 1)
        while index[slot] != 0 { slot = (slot + 1) & (index.count - 1) }
        index[slot] = UInt32(position + 1)
    }

    /// Forgets `key` (its record never became durable).
    public mutating func remove(_ key: DedupeKey, seq: UInt64) {
        guard !index.isEmpty, let slot = findSlot(key, seq: seq) else { return }
        let position = Int(index[slot] - 1)
        deleteSlot(slot)
        ring[position].seq = 0
    }

    // MARK: internals

    private func findSlot(_ key: DedupeKey, seq: UInt64) -> Int? {
        var slot = Int(truncatingIfNeeded: key.a) & (index.count - 1)
        while index[slot] != 0 {
            let entry = ring[Int(index[slot] - 1)]
            if entry.key == key, entry.seq == seq { return slot }
            slot = (slot + 1) & (index.count - 1)
        }
        return nil
    }

    /// Drops entries accepted before now - window.
    private mutating func expire(now: UInt64) {
        guard windowMillis > 0, now > windowMillis else { return }
        let cutoff = now - windowMillis
        var firstLiveSeq: UInt64?
        while timeMarksHead < timeMarks.count, timeMarks[timeMarksHead].millis < cutoff {
            timeMarksHead += 1
        }
        if timeMarksHead < timeMarks.count { firstLiveSeq = timeMarks[timeMarksHead].seq }
        if timeMarksHead > 1024, timeMarksHead * 2 > timeMarks.count {
            timeMarks.removeFirst(timeMarksHead)
            timeMarksHead = 0
        }
        // Entries whose seq precedes the first seq of the first live second are older than the window.
        while head < tail {
            let entry = ring[Int(head % UInt64(ring.count))]
            if let firstLiveSeq, entry.seq >= firstLiveSeq { break }
            if entry.seq == 0 && firstLiveSeq != nil { head += 1; continue }
            evictOldest()
        }
    }

    private mutating func evictOldest() {
        guard head < tail else { return }
        let position = Int(head % UInt64(ring.count))
        let entry = ring[position]
        if entry.seq != 0, let slot = findSlot(entry.key, seq: entry.seq) { deleteSlot(slot) }
        head += 1
    }

    /// Backward-shift deletion keeps linear probing correct without tombstones.
    private mutating func deleteSlot(_ removed: Int) {
        let mask = index.count - 1
        var hole = removed
        var next = (hole + 1) & mask
        index[hole] = 0
        while index[next] != 0 {
            let home = Int(truncatingIfNeeded: ring[Int(index[next] - 1)].key.a) & mask
            // Move `next` into the hole if its home is not in (hole, next].
            let distanceToNext = (next - home) & mask
            let distanceToHole = (hole - home) & mask
            if distanceToHole < distanceToNext || (distanceToHole == 0) {
                index[hole] = index[next]
                index[next] = 0
                hole = next
            }
            next = (next + 1) & mask
        }
    }

    private mutating func growIfNeeded() {
        let needed = count + 1
        if ring.count >= needed { return }
        let newCapacity = min(max(1024, ring.count * 2), maxEntries)
        var newRing = [Entry](repeating: Entry(key: DedupeKey(a: 0, b: 0), seq: 0), count: max(newCapacity, needed))
        var newTail: UInt64 = 0
        var position = head
        while position < tail {
            let entry = ring[Int(position % UInt64(ring.count))]
            if entry.seq != 0 {
                newRing[Int(newTail)] = entry
                newTail += 1
            }
            position += 1
        }
        ring = newRing
        head = 0
        tail = newTail
        var indexSize = 1
        while indexSize < ring.count * 2 { indexSize <<= 1 }
        index = [UInt32](repeating: 0, count: indexSize)
        for position in 0..<Int(tail) {
            var slot = Int(truncatingIfNeeded: ring[position].key.a) & (indexSize - 1)
            while index[slot] != 0 { slot = (slot + 1) & (indexSize - 1) }
            index[slot] = UInt32(position + 1)
        }
    }
}
