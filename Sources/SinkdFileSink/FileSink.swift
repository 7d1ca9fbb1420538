#if canImport(Glibc)
import Glibc
#endif
import NIOPosix
import SinkdCore
import SinkdDelivery
import SinkdWAL

/// `file:NAME`: appends each message body as one line to `sinks.file.directory/NAME.ndjson`,
/// one fdatasync per batch. A record is delivered once its line is on disk; after a crash between
/// the write and the progress save the line can appear twice (at-least-once).
public final class FileSinkFamily: SinkFamily {
    public let name = ConfigFamily.file
    public let directory: String
    let pool: NIOThreadPool

    public init(config: FileSinkConfig, pool: NIOThreadPool = .singleton) {
        self.directory = config.directory
        self.pool = pool
    }

    public func limits(for address: SinkAddress, options: PipelineOptions) -> SinkLimits {
        SinkLimits(maxBatchCount: options.batchSize, maxBatchBytes: 8 << 20, maxMessageBytes: 64 << 20)
    }

    public func makeClient(
        for address: SinkAddress, options: PipelineOptions
    ) throws(SinkConnectionError) -> any SinkClient {
        guard case .file(let name) = address.target else { throw SinkConnectionError("not a file sink: \(address)") }
        return FileSinkClient(path: directory + "/" + name + ".ndjson", directory: directory, pool: pool)
    }
}

final class FileSinkClient: SinkClient, @unchecked Sendable {
    let path: String
    let directory: String
    let pool: NIOThreadPool
    private let lock = Lock()
    private var fd: CInt = -1

    init(path: String, directory: String, pool: NIOThreadPool) {
        self.path = path
        self.directory = directory
        self.pool = pool
    }

    func send(_ batch: [SequencedRecord]) async throws(SinkConnectionError) -> [DeliveryOutcome] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(batch.reduce(0) { $0 + $1.record.payload.count + 1 })
        for item in batch {
            bytes += item.record.payload
            bytes.append(UInt8(ascii: "\n"))
        }
        let result: Result<Void, FileError>
        do {
            result = try await pool.runIfActive { [self, bytes] in
                lock.withLock { self.write(bytes) }
            }
        } catch {
            throw SinkConnectionError("the file sink's I/O thread pool is not running")
        }
        if case .failure(let error) = result {
            throw SinkConnectionError("cannot append to \(path): \(error)")
        }
        return Array(repeating: .delivered, count: batch.count)
    }

    /// Appends and syncs; on failure the file is reopened next time (and cut back to its size
    /// before this write, so a partial batch is not left behind).
    private func write(_ bytes: [UInt8]) -> Result<Void, FileError> {
        do throws(FileError) {
            if fd < 0 {
                try FileIO.makeDirectories(directory)
                try FileIO.checkStateDirectory(directory)
                let opened = try FileIO.openForAppend(path, directory: directory)
                do throws(FileError) {
                    try Self.cutTornTail(opened, path: path)
                } catch {
                    Glibc.close(opened)
                    throw error
                }
                fd = opened
            }
            let before = try FileIO.size(fd, path: path)
            do throws(FileError) {
                try FileIO.writeAll(fd, bytes, path: path)
                try FileIO.dataSync(fd, path: path)
            } catch {
                try? FileIO.truncate(fd, to: before, path: path)
                Glibc.close(fd)
                fd = -1
                throw error
            }
            return .success(())
        } catch {
            return .failure(error)
        }
    }

    /// A SIGKILL in the middle of a batch's write can leave a partial last line. That batch was
    /// never confirmed, so its records are still in the WAL and are written again; but appended
    /// after the partial line, the first of them would be glued onto it and unreadable (the crash
    /// oracle found one). So before the first append the file is cut back to its last newline.
    static func cutTornTail(_ fd: CInt, path: String) throws(FileError) {
        let size = try FileIO.size(fd, path: path)
        guard size > 0 else { return }
        let reader = Glibc.open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard reader >= 0 else { throw FileError(operation: "open", path: path, errno: errno) }
        defer { Glibc.close(reader) }
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        var end = size
        while end > 0 {
            let start = max(0, end - buffer.count)
            let wanted = end - start
            let n = buffer.withUnsafeMutableBytes { pread(reader, $0.baseAddress, wanted, off_t(start)) }
            guard n == wanted else { throw FileError(operation: "pread", path: path, errno: n < 0 ? errno : EIO) }
            if let i = buffer[0..<n].lastIndex(of: UInt8(ascii: "\n")) {
                let keep = start + i + 1
                if keep < size {
                    try FileIO.truncate(fd, to: keep, path: path)
                    try FileIO.dataSync(fd, path: path)
                }
                return
            }
            end = start
        }
        try FileIO.truncate(fd, to: 0, path: path)
        try FileIO.dataSync(fd, path: path)
    }

    func close() async {
        lock.withLock {
            if fd >= 0 {
                Glibc.close(fd)
                fd = -1
            }
        }
    }
}
