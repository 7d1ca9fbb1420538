#if canImport(Glibc)
import Glibc
#endif

/// The (sink, id) pairs accepted recently, for answering `duplicate` with the original seq.
///
/// Bounded two ways: at most `maxEntries` keys (the oldest is forgotten first) and at most
/// `window` old (by acceptance time). Memory: a ring of 16-byte entries in insertion order and a
/// linear-probing index of 4-byte slots (twice as many slots as entries): 24 MiB at a million
/// entries. Both are allocated zeroed at their full size up front, so the kernel backs pages
/// only as entries are written and the table never copies itself to grow.
///
/// An entry keeps 96 of the key's 128 bits (a false duplicate needs two of a million live keys
/// to agree on 96 bits: about 1e-23 per record) and the low 32 bits of the seq, completed from
/// the newest seq (the live entries always span far fewer than 2^32 seqs).
/// Not thread-safe: the WAL uses it under its lock.
public final class DedupeTable: @unchecked Sendable {
    struct Entry {
        var a: UInt64
        var b: UInt32
        var seqLow: UInt32
    }

    public let maxEntries: Int
    public let windowMillis: UInt64
    private let ring: UnsafeMutablePointer<Entry>?
    private let index: UnsafeMutablePointer<UInt32>?
    private let mask: Int
    /// Absolute insertion numbers of the oldest live position and of the next insertion.
    private var head: UInt64 = 0
    private var tail: UInt64 = 0
    private var newestSeq: UInt64 = 0
    /// Acceptance time marks, one per distinct second: (millis, first seq accepted then).
    private var timeMarks: [(millis: UInt64, seq: UInt64)] = []
    private var timeMarksHead = 0

    public init(maxEntries: Int, window: Duration) {
        self.maxEntries = max(0, maxEntries)
        self.windowMillis = UInt64(max(0, window.milliseconds))
        guard self.maxEntries > 0 else {
            ring = nil
            index = nil
            mask = 0
            return
        }
        var slots = 1
        while slots < self.maxEntries * 2 { slots <<= 1 }
        ring = calloc(self.maxEntries, MemoryLayout<Entry>.stride)!.bindMemory(
            to: Entry.self, capacity: self.maxEntries)
        index = calloc(slots, MemoryLayout<UInt32>.stride)!.bindMemory(to: UInt32.self, capacity: slots)
        mask = slots - 1
    }

    deinit {
        free(ring)
        free(index)
    }

    public var count: Int { Int(tail - head) }

    /// The seq of the live entry for `key`, if it was accepted within the window.
    public func lookUp(_ key: DedupeKey, now: UInt64) -> UInt64? {
        guard let ring, let index else { return nil }
        expire(now: now)
        var slot = Int(truncatingIfNeeded: key.a) & mask
        while index[slot] != 0 {
            let entry = ring[Int(index[slot] - 1)]
            if entry.a == key.a, entry.b == UInt32(truncatingIfNeeded: key.b) { return fullSeq(entry.seqLow) }
            slot = (slot + 1) & mask
        }
        return nil
    }

    /// Remembers `key` as accepted with `seq` at `now` (milliseconds). Seqs must grow.
    public func insert(_ key: DedupeKey, seq: UInt64, now: UInt64) {
        guard let ring, let index, seq != 0 else { return }
        if timeMarks.count == timeMarksHead || now / 1000 != timeMarks[timeMarks.count - 1].millis / 1000 {
            timeMarks.append((now, seq))
        }
        if count == maxEntries { evictOldest() }
        newestSeq = max(newestSeq, seq)
        let position = Int(tail % UInt64(maxEntries))
        ring[position] = Entry(a: key.a, b: UInt32(truncatingIfNeeded: key.b), seqLow: UInt32(truncatingIfNeeded: seq))
        tail += 1
        var slot = Int(truncatingIfNeeded: key.a) & mask
        while index[slot] != 0 { slot = (slot + 1) & mask }
        index[slot] = UInt32(position + 1)
    }

    /// Forgets `key` (its record never became durable). Its ring entry stays until its turn to
    /// expire but can no longer be found.
    public func remove(_ key: DedupeKey, seq: UInt64) {
        guard
            let slot = findSlot(a: key.a, b: UInt32(truncatingIfNeeded: key.b), seqLow: UInt32(truncatingIfNeeded: seq))
        else { return }
        deleteSlot(slot)
    }

    // MARK: internals

    private func fullSeq(_ low: UInt32) -> UInt64 {
        var seq = (newestSeq & ~0xFFFF_FFFF) | UInt64(low)
        if seq > newestSeq { seq -= 1 << 32 }
        return seq
    }

    private func findSlot(a: UInt64, b: UInt32, seqLow: UInt32) -> Int? {
        guard let ring, let index else { return nil }
        var slot = Int(truncatingIfNeeded: a) & mask
        while index[slot] != 0 {
            let entry = ring[Int(index[slot] - 1)]
            if entry.a == a, entry.b == b, entry.seqLow == seqLow { return slot }
            slot = (slot + 1) & mask
        }
        return nil
    }

    /// Drops entries accepted before now - window.
    private func expire(now: UInt64) {
        guard windowMillis > 0, now > windowMillis, let ring else { return }
        let cutoff = now - windowMillis
        while timeMarksHead < timeMarks.count, timeMarks[timeMarksHead].millis < cutoff {
            timeMarksHead += 1
        }
        if timeMarksHead > 1024, timeMarksHead * 2 > timeMarks.count {
            timeMarks.removeFirst(timeMarksHead)
            timeMarksHead = 0
        }
        // Everything before the first seq of the first second still in the window is older.
        let firstLiveSeq = timeMarksHead < timeMarks.count ? timeMarks[timeMarksHead].seq : UInt64.max
        while head < tail, fullSeq(ring[Int(head % UInt64(maxEntries))].seqLow) < firstLiveSeq {
            evictOldest()
        }
    }

    private func evictOldest() {
        guard head < tail, let ring else { return }
        let entry = ring[Int(head % UInt64(maxEntries))]
        if let slot = findSlot(a: entry.a, b: entry.b, seqLow: entry.seqLow) { deleteSlot(slot) }
        head += 1
    }

    /// Backward-shift deletion keeps linear probing correct without tombstones.
    private func deleteSlot(_ removed: Int) {
        guard let ring, let index else { return }
        var hole = removed
        var next = (hole + 1) & mask
        index[hole] = 0
        while index[next] != 0 {
            let home = Int(truncatingIfNeeded: ring[Int(index[next] - 1)].a) & mask
            // `next` may move into the hole unless its home lies cyclically in (hole, next].
            if (hole - home) & mask < (next - home) & mask {
                index[hole] = index[next]
                index[next] = 0
                hole = next
            }
            next = (next + 1) & mask
        }
    }
}
