import SinkdCore

/// Which records of each sink are finished (delivered or dead-lettered): I/O-free, persisted by
/// the WAL as the `progress` file.
///
/// Per sink, three values describe the finished set exactly, in memory bounded by what the
/// pipeline holds in flight, whatever the backlog:
/// - `readUpTo` (R): every record of the sink with seq ≤ R has been handed to the pipeline;
/// - `outstanding` (O): the handed-out seqs not finished yet (in flight, or waiting for a retry);
/// - so a record of the sink with seq s is finished iff s ≤ R and s ∉ O.
///
/// `watermark` (min(O) - 1, or R when O is empty) is derived: everything at or below it is finished.
/// After a restart the pipeline re-reads the records in O first, then everything after R.
public struct DeliveryProgress: Sendable, Equatable {
    public struct Sink: Sendable, Equatable {
        public var readUpTo: UInt64 = 0
        public var outstanding: Set<UInt64> = []
        /// Set from the progress's counter at each change (0: never changed here, e.g. decoded):
        /// lets a checkpoint reuse the encoding of a sink that did not change (`RunsCache`).
        /// Not part of equality.
        public internal(set) var revision: UInt64 = 0

        public init(readUpTo: UInt64 = 0, outstanding: Set<UInt64> = []) {
            self.readUpTo = readUpTo
            self.outstanding = outstanding
        }

        public static func == (a: Sink, b: Sink) -> Bool {
            a.readUpTo == b.readUpTo && a.outstanding == b.outstanding
        }

        public var watermark: UInt64 {
            guard let lowest = outstanding.min() else { return readUpTo }
            return lowest - 1
        }

        public func isFinished(_ seq: UInt64) -> Bool {
            seq <= readUpTo && !outstanding.contains(seq)
        }

        /// True when every record of the sink with seq in [first, last] is finished.
        public func isFinished(from first: UInt64, through last: UInt64) -> Bool {
            last <= readUpTo && !outstanding.contains(where: { $0 >= first && $0 <= last })
        }
    }

    public private(set) var sinks: [String: Sink] = [:]
    /// A seq above every seq ever assigned when this was saved: never reused after a restart.
    public var nextSeq: UInt64 = 1
    /// Identifies this progress and its copies (a snapshot shares it), so that revisions are only
    /// compared within one lineage; a decoded progress starts a new one.
    let lineage = UInt64.random(in: 1...UInt64.max)
    private var lastRevision: UInt64 = 0

    public init() {}

    public static func == (a: DeliveryProgress, b: DeliveryProgress) -> Bool {
        a.sinks == b.sinks && a.nextSeq == b.nextSeq
    }

    public func sink(_ name: String) -> Sink { sinks[name] ?? Sink() }

    /// The pipeline took record `seq` of `sink` to deliver it.
    public mutating func handedOut(sink name: String, seq: UInt64) {
        handedOut(sink: name, seqs: CollectionOfOne(seq))
    }

    /// Records of `sink` taken by the pipeline, in seq order. (Mutates in place: copying the
    /// sink's set per record would make a large in-flight window quadratic.)
    public mutating func handedOut(sink name: String, seqs: some Sequence<UInt64>) {
        update(name) { s in
            for seq in seqs where seq > s.readUpTo {
                s.readUpTo = seq
                s.outstanding.insert(seq)
            }
        }
    }

    /// The record `seq` of `sink` was delivered or dead-lettered.
    public mutating func finished(sink name: String, seq: UInt64) {
        finished(sink: name, seqs: CollectionOfOne(seq))
    }

    public mutating func finished(sink name: String, seqs: some Sequence<UInt64>) {
        guard sinks[name] != nil else { return }
        update(name) { s in
            for seq in seqs { s.outstanding.remove(seq) }
        }
    }

    private mutating func update(_ name: String, _ body: (inout Sink) -> Void) {
        lastRevision += 1
        let revision = lastRevision
        body(&sinks[name, default: Sink()])
        sinks[name]!.revision = revision
    }

    /// Drops sinks with nothing outstanding whose every record precedes `oldestLiveSeq`: their
    /// records are all gone from the WAL, and a new record will have a larger seq than R anyway.
    public mutating func prune(oldestLiveSeq: UInt64) {
        sinks = sinks.filter { !$0.value.outstanding.isEmpty || $0.value.readUpTo >= oldestLiveSeq }
    }

    // MARK: persistence

    static let magic: [UInt8] = Array("SINKDPRG".utf8)

    /// Version 2: `"SINKDPRG" u32 version u64 nextSeq u32 sinkCount; per sink: u16 len, name,
    /// u64 readUpTo, u32 runCount, runCount × (u64 first seq, u32 length) ascending; u32 crc32c of
    /// everything before`. The outstanding seqs are nearly always a few runs (a whole in-flight
    /// window is thousands of consecutive seqs), so a checkpoint writes tens of bytes per sink, not
    /// eight per seq. Version 1 (sinkd before 2026-12-02; still read) listed each seq: `u32 count,
    /// u64 × count` in place of the runs.
    ///
    /// `cache`: the runs of each sink as last encoded; a sink whose revision did not change since is
    /// not encoded again (a sink that is down holds a window of tens of thousands of outstanding
    /// seqs, and the other sinks' deliveries make a checkpoint due every 250 ms: the soak saw those
    /// re-encodings take most of sinkd's CPU during each Kafka outage).
    public func encode(cache: RunsCache? = nil) -> [UInt8] {
        cache?.begin(lineage: lineage)
        let named = sinks.sorted(by: { $0.key < $1.key }).map { name, sink in
            (name: name, readUpTo: sink.readUpTo, runs: cache?.runs(of: name, sink) ?? Self.runs(sink.outstanding))
        }
        cache?.keep(Set(sinks.keys))
        var size = Self.magic.count + 4 + 8 + 4 + 4
        for s in named { size += 2 + s.name.utf8.count + 8 + 4 + 12 * s.runs.count }
        // Sized first and written in place.
        var out = [UInt8](repeating: 0, count: size)
        out.withUnsafeMutableBytes { raw in
            var at = 0
            func put<T: FixedWidthInteger>(_ value: T) {
                raw.storeBytes(of: value.littleEndian, toByteOffset: at, as: T.self)
                at += MemoryLayout<T>.size
            }
            func put(bytes: some Collection<UInt8>) {
                for b in bytes {
                    raw[at] = b
                    at += 1
                }
            }
            put(bytes: Self.magic)
            put(UInt32(2))
            put(nextSeq)
            put(UInt32(named.count))
            for s in named {
                put(UInt16(s.name.utf8.count))
                put(bytes: s.name.utf8)
                put(s.readUpTo)
                put(UInt32(s.runs.count))
                for run in s.runs {
                    put(run.first)
                    put(run.length)
                }
            }
            put(CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[0..<at])))
        }
        return out
    }

    /// `seqs` as ascending runs of consecutive seqs. Without sorting the set (tens of thousands of
    /// seqs at every checkpoint): a run starts at each seq whose predecessor is not in it.
    static func runs(_ seqs: Set<UInt64>) -> [(first: UInt64, length: UInt32)] {
        var out: [(first: UInt64, length: UInt32)] = []
        for seq in seqs where seq == 0 || !seqs.contains(seq - 1) {
            var start = seq
            var length: UInt32 = 1
            while start &+ UInt64(length) > start, seqs.contains(start + UInt64(length)) {
                if length == UInt32.max {
                    out.append((start, length))
                    start += UInt64(length)
                    length = 0
                }
                length += 1
            }
            out.append((start, length))
        }
        out.sort { $0.first < $1.first }
        return out
    }

    /// At most this many outstanding seqs are read back from one version 2 file (whose runs, unlike
    /// version 1's seqs, are not bounded by its size): a damaged file whose checksum still matched
    /// must not make start-up allocate without bound.
    static let maxDecodedSeqs = 1 << 26

    public static func decode(_ bytes: [UInt8]) -> DeliveryProgress? {
        guard bytes.count >= 4 else { return nil }
        let body = bytes.count - 4
        let stored = bytes[body...].withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self)) }
        guard CRC32C.checksum(bytes[..<body]) == stored else { return nil }
        return bytes.withUnsafeBytes { raw -> DeliveryProgress? in
            var c = ByteCursor(UnsafeRawBufferPointer(rebasing: raw[0..<body]))
            do {
                guard Array(try c.take(8)) == magic else { return nil }
                let version = try c.u32()
                guard version == 1 || version == 2 else { return nil }
                var p = DeliveryProgress()
                p.nextSeq = try c.u64()
                let count = Int(try c.u32())
                var decoded = 0
                for _ in 0..<count {
                    let name = try c.string(Int(try c.u16()))
                    var s = Sink(readUpTo: try c.u64())
                    let n = Int(try c.u32())
                    if version == 1 {
                        for _ in 0..<n { s.outstanding.insert(try c.u64()) }  // bounded by the file's size
                    } else {
                        for _ in 0..<n {
                            let first = try c.u64()
                            let length = UInt64(try c.u32())
                            // Outstanding seqs were handed out: 1 ≤ seq ≤ readUpTo.
                            guard first >= 1, length >= 1, first <= s.readUpTo, length - 1 <= s.readUpTo - first else {
                                return nil
                            }
                            decoded += Int(length)
                            guard decoded <= maxDecodedSeqs else { return nil }
                            for seq in first...(first + (length - 1)) { s.outstanding.insert(seq) }
                        }
                    }
                    p.sinks[name] = s
                }
                return c.remaining == 0 ? p : nil
            } catch {
                return nil
            }
        }
    }
}

/// The encoded runs of each sink from the last checkpoint, reused while the sink's revision is the
/// same (DeliveryProgress.encode). Used by one checkpoint at a time (ProgressStore.save).
public final class RunsCache: @unchecked Sendable {
    private var lineage: UInt64 = 0
    private var entries: [String: (revision: UInt64, runs: [(first: UInt64, length: UInt32)])] = [:]
    /// How many sinks the last encodes took from the cache (for tests).
    public private(set) var hits = 0

    public init() {}

    /// Starts an encode of a progress of `lineage`: entries of another lineage are dropped.
    func begin(lineage: UInt64) {
        if lineage != self.lineage {
            self.lineage = lineage
            entries = [:]
        }
    }

    func runs(of name: String, _ sink: DeliveryProgress.Sink) -> [(first: UInt64, length: UInt32)] {
        if sink.revision != 0, let entry = entries[name], entry.revision == sink.revision {
            hits += 1
            return entry.runs
        }
        let runs = DeliveryProgress.runs(sink.outstanding)
        entries[name] = (sink.revision, runs)
        return runs
    }

    /// Ends an encode: sinks no longer in the progress are forgotten.
    func keep(_ names: Set<String>) {
        entries = entries.filter { names.contains($0.key) }
    }
}
