#if canImport(Glibc)
import Glibc
#endif
import SinkdCore

/// Where `DeliveryProgress` lives on disk: two preallocated files, `progress.0` and `progress.1`,
/// each saved in place with the same content at every checkpoint, one after the other.
///
/// ```
/// slot = u32 length, u64 generation, DeliveryProgress.encode() (length bytes), u32 crc32c of all before
///        then unused preallocated bytes
/// ```
/// Why two, and why in place:
/// - The seq floor (`DeliveryProgress.nextSeq`) survives the loss or damage of any single file:
///   segments are deleted only after both slots hold the checkpoint that allows it, so either
///   slot alone is a valid floor (a crash while writing one leaves the other, from the previous
///   checkpoint, before which nothing newer was deleted).
/// - Saving needs no free space: the bytes are written over space allocated when the slot was
///   created (or grown), with no temporary file, rename or directory update. On a full disk
///   sinkd can still record what it delivered, and so delete segments and free space.
///
/// The file `progress` of earlier versions (the same encoding, replaced atomically) is read when
/// present and removed after the first save.
final class ProgressStore {
    static let slotNames = ["progress.0", "progress.1"]
    static let legacyName = "progress"
    static let minimumCapacity = 64 << 10

    let directory: String
    private var generation: UInt64 = 0
    /// Each sink's runs as last saved: an unchanged sink is not encoded again.
    let runsCache = RunsCache()
    private let saving = Lock()
    private var capacity: [Int] = [0, 0]
    private var legacyPresent = false
    /// Each slot stays open once written: a save needs no new descriptor (with every descriptor
    /// in use, a checkpoint still lands). Closed after a failed write, reopened at the next.
    private var fds: [CInt] = [-1, -1]

    init(directory: String) {
        self.directory = directory
    }

    struct Loaded {
        /// The newest valid copy.
        var progress: DeliveryProgress?
        /// The highest `nextSeq` of every valid copy.
        var floor: UInt64 = 1
        /// Slot or legacy files that could not be read or decoded (the caller moves them aside).
        var damaged: [(name: String, reason: String)] = []
    }

    /// Reads every copy. Never throws: a copy that cannot be read is reported as damaged.
    func load() -> Loaded {
        var out = Loaded()
        var newest: (generation: UInt64, progress: DeliveryProgress)?
        for (i, name) in Self.slotNames.enumerated() {
            let file = directory + "/" + name
            var st = stat()
            guard lstat(file, &st) == 0 else { continue }
            guard (st.st_mode & S_IFMT) == S_IFREG else {
                out.damaged.append((name, "not a regular file"))
                continue
            }
            let bytes: [UInt8]
            do throws(FileError) {
                bytes = try FileIO.readFile(file, noFollow: true)
            } catch {
                out.damaged.append((name, "\(error)"))
                continue
            }
            guard let (gen, progress) = Self.decodeSlot(bytes) else {
                out.damaged.append((name, "checksum mismatch or truncated"))
                continue
            }
            capacity[i] = bytes.count
            out.floor = max(out.floor, progress.nextSeq)
            if newest == nil || gen > newest!.generation { newest = (gen, progress) }
        }
        let legacy = directory + "/" + Self.legacyName
        var st = stat()
        if lstat(legacy, &st) == 0 {
            legacyPresent = true
            if (st.st_mode & S_IFMT) != S_IFREG {
                out.damaged.append((Self.legacyName, "not a regular file"))
            } else if let bytes = try? FileIO.readFile(legacy, noFollow: true),
                let progress = DeliveryProgress.decode(bytes)
            {
                out.floor = max(out.floor, progress.nextSeq)
                if newest == nil { newest = (0, progress) }
            } else {
                out.damaged.append((Self.legacyName, "unreadable or checksum mismatch"))
            }
        }
        generation = newest?.generation ?? 0
        out.progress = newest?.progress
        return out
    }

    var hasBothSlots: Bool { capacity[0] > 0 && capacity[1] > 0 }

    /// A slot was moved aside: it is created again at the next save.
    func forget(_ name: String) {
        if let i = Self.slotNames.firstIndex(of: name) {
            capacity[i] = 0
            closeSlot(i)
        }
        if name == Self.legacyName { legacyPresent = false }
    }

    /// Writes `progress` into both slots, each synced before the next.
    func save(_ progress: DeliveryProgress) throws(FileError) {
        // One save at a time: the maintenance thread checkpoints, and so may a caller of
        // WriteAheadLog.checkpoint() (tests do); the generation and the runs cache are shared.
        let result: Result<Void, FileError> = saving.withLock {
            do throws(FileError) {
                generation += 1
                let bytes = Self.encodeSlot(generation: generation, progress, cache: runsCache)
                for i in 0..<2 {
                    try write(bytes, slot: i)
                }
                if legacyPresent {
                    try FileIO.unlink(directory + "/" + Self.legacyName)
                    legacyPresent = false
                }
                return .success(())
            } catch {
                return .failure(error)
            }
        }
        try result.get()
    }

    private func write(_ bytes: [UInt8], slot i: Int) throws(FileError) {
        let file = directory + "/" + Self.slotNames[i]
        do throws(FileError) {
            if capacity[i] == 0 {
                // Created once (and after a damaged copy was moved aside): this is the only step
                // that needs free space.
                closeSlot(i)
                fds[i] = try FileIO.open(file, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW)
                let size = max(Self.minimumCapacity, bytes.count * 2)
                try FileIO.allocate(fds[i], size: size, path: file)
                try FileIO.writeAll(fds[i], bytes, path: file)
                try FileIO.dataSync(fds[i], path: file)
                try FileIO.syncDirectory(directory)
                capacity[i] = size
                return
            }
            if fds[i] < 0 { fds[i] = try FileIO.open(file, O_WRONLY | O_NOFOLLOW) }
            if bytes.count > capacity[i] {
                let size = bytes.count * 2
                try FileIO.allocate(fds[i], size: size, path: file)
                capacity[i] = size
            }
            try FileIO.writeAll(fds[i], bytes, at: 0, path: file)
            try FileIO.dataSync(fds[i], path: file)
        } catch {
            closeSlot(i)
            throw error
        }
    }

    private func closeSlot(_ i: Int) {
        if fds[i] >= 0 { Glibc.close(fds[i]) }
        fds[i] = -1
    }

    /// Closes the slots (the WAL's shutdown).
    func close() {
        closeSlot(0)
        closeSlot(1)
    }

    static func encodeSlot(generation: UInt64, _ progress: DeliveryProgress, cache: RunsCache? = nil) -> [UInt8] {
        let payload = progress.encode(cache: cache)
        var out: [UInt8] = []
        out.reserveCapacity(payload.count + 16)
        out.appendLE(UInt32(payload.count))
        out.appendLE(generation)
        out += payload
        out.appendLE(CRC32C.checksum(out))
        return out
    }

    /// Decodes a slot's bytes (trailing preallocated bytes ignored); nil if damaged.
    static func decodeSlot(_ bytes: [UInt8]) -> (UInt64, DeliveryProgress)? {
        guard bytes.count >= 16 else { return nil }
        let length = bytes.withUnsafeBytes { Int(UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self))) }
        guard length <= bytes.count - 16 else { return nil }
        let end = 12 + length
        let stored = bytes[end..<(end + 4)].withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self)) }
        guard CRC32C.checksum(bytes[0..<end]) == stored else { return nil }
        let generation = bytes[4..<12].withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        guard let progress = DeliveryProgress.decode(Array(bytes[12..<end])) else { return nil }
        return (generation, progress)
    }
}
