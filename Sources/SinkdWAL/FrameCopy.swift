// What the writer keeps of the frames it wrote: the active segment's records, and copies of
// frames not yet synced or to be written again after a failure (WALWriter.swift, Failures).

/// One record of the active segment, as the writer tracks it.
struct ActiveEntry {
    var seq: UInt64
    var key: DedupeKey
    var sink: String
    var bodyBytes: Int
    var acceptedAtMillis: UInt64
    /// The file offset just past its frame.
    var end: Int

    init(_ e: WriteAheadLog.Round.Entry, end: Int) {
        seq = e.seq
        key = e.key
        sink = e.sink
        bodyBytes = e.frameLength - SegmentFormat.frameHeaderSize
        acceptedAtMillis = e.acceptedAtMillis
        self.end = end
    }
}

extension SegmentSummary {
    /// The exact summary of these records.
    init(entries: some Sequence<ActiveEntry>) {
        self.init()
        for e in entries { add(seq: e.seq, sink: e.sink, bodyBytes: e.bodyBytes, acceptedAtMillis: e.acceptedAtMillis) }
    }

    func encode(entries: [ActiveEntry]) -> [UInt8] {
        encode(keys: entries.map { SummaryKey(key: $0.key, seq: $0.seq, acceptedAtMillis: $0.acceptedAtMillis) })
    }
}

/// Copies of frames with their entries (offsets into `frames`).
struct FrameCopy {
    var frames: [UInt8] = []
    var entries: [WriteAheadLog.Round.Entry] = []

    mutating func append(_ round: WriteAheadLog.Round, from index: Int) {
        guard index < round.entries.count else { return }
        let start = round.entries[index].frameOffset
        let base = frames.count
        frames.append(contentsOf: round.frames[start...])
        for var e in round.entries[index...] {
            e.frameOffset = e.frameOffset - start + base
            entries.append(e)
        }
    }

    mutating func append(_ other: FrameCopy) {
        let base = frames.count
        frames += other.frames
        for var e in other.entries {
            e.frameOffset += base
            entries.append(e)
        }
    }

    mutating func removeAll() {
        frames.removeAll()
        entries.removeAll()
    }
}
