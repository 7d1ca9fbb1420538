#if canImport(Glibc)
import Glibc
#endif
import SinkdCore

/// A failed system call on a path, with errno: what the operator needs to act.
public struct FileError: Error, Sendable, Equatable, CustomStringConvertible {
    public var operation: String
    public var path: String
    public var errno: CInt
    /// What the operator should know or do, when there is more to say than errno.
    public var detail: String?

    public init(operation: String, path: String, errno: CInt, detail: String? = nil) {
        self.operation = operation
        self.path = path
        self.errno = errno
        self.detail = detail
    }

    public var isNoSpace: Bool { errno == ENOSPC || errno == EDQUOT }

    public var description: String {
        let base = "\(operation) \(path): \(String(cString: strerror(errno))) (errno \(errno))"
        return detail.map { base + ": " + $0 } ?? base
    }
}

/// The file operations the WAL performs, each a thin wrapper that retries EINTR and throws
/// `FileError`. A seam for fault injection: tests substitute failures through `FaultInjector`.
public enum FileIO {
    public static func open(_ path: String, _ flags: CInt, mode: mode_t = 0o640) throws(FileError) -> CInt {
        while true {
            let fd = Glibc.open(path, flags | O_CLOEXEC, mode)
            if fd >= 0 { return fd }
            if errno != EINTR { throw FileError(operation: "open", path: path, errno: errno) }
        }
    }

    public static func writeAll(_ fd: CInt, _ bytes: UnsafeRawBufferPointer, path: String) throws(FileError) {
        if let injected = FaultInjector.shared.failure(for: .write, path: path) {
            throw FileError(operation: "write", path: path, errno: injected)
        }
        var done = 0
        while done < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw FileError(operation: "write", path: path, errno: errno)
            }
            done += n
        }
    }

    /// Writes all of `bytes` at `offset` (pwrite; the file offset does not move).
    public static func writeAll(_ fd: CInt, _ bytes: [UInt8], at offset: Int, path: String) throws(FileError) {
        if let injected = FaultInjector.shared.failure(for: .write, path: path) {
            throw FileError(operation: "write", path: path, errno: injected)
        }
        let failure: CInt? = bytes.withUnsafeBytes { raw in
            var done = 0
            while done < raw.count {
                let n = Glibc.pwrite(fd, raw.baseAddress! + done, raw.count - done, off_t(offset + done))
                if n < 0 {
                    if errno == EINTR { continue }
                    return errno
                }
                done += n
            }
            return nil
        }
        if let failure { throw FileError(operation: "write", path: path, errno: failure) }
    }

    /// Allocates the file's blocks up to `size` bytes, so that writes within it need no free space.
    public static func allocate(_ fd: CInt, size: Int, path: String) throws(FileError) {
        if let injected = FaultInjector.shared.failure(for: .write, path: path) {
            throw FileError(operation: "fallocate", path: path, errno: injected)
        }
        let rc = posix_fallocate(fd, 0, off_t(size))
        if rc != 0 { throw FileError(operation: "fallocate", path: path, errno: rc) }
    }

    /// Writes `bytes[range]` (all of it when `range` is nil).
    public static func writeAll(_ fd: CInt, _ bytes: [UInt8], range: Range<Int>? = nil, path: String) throws(FileError)
    {
        let result: Result<Void, FileError> = bytes.withUnsafeBytes { raw in
            let slice = range.map { UnsafeRawBufferPointer(rebasing: raw[$0]) } ?? raw
            do throws(FileError) {
                try writeAll(fd, slice, path: path)
                return .success(())
            } catch {
                return .failure(error)
            }
        }
        try result.get()
    }

    public static func dataSync(_ fd: CInt, path: String) throws(FileError) {
        if let injected = FaultInjector.shared.failure(for: .fsync, path: path) {
            throw FileError(operation: "fdatasync", path: path, errno: injected)
        }
        while fdatasync(fd) != 0 {
            if errno != EINTR { throw FileError(operation: "fdatasync", path: path, errno: errno) }
        }
    }

    public static func sync(_ fd: CInt, path: String) throws(FileError) {
        while fsync(fd) != 0 {
            if errno != EINTR { throw FileError(operation: "fsync", path: path, errno: errno) }
        }
    }

    /// Makes a directory's entries (creations, renames, unlinks) durable.
    public static func syncDirectory(_ path: String) throws(FileError) {
        if let injected = FaultInjector.shared.failure(for: .directorySync, path: path + "/") {
            throw FileError(operation: "fsync", path: path, errno: injected)
        }
        let fd = try open(path, O_RDONLY | O_DIRECTORY)
        defer { close(fd) }
        try sync(fd, path: path)
    }

    public static func truncate(_ fd: CInt, to size: Int, path: String) throws(FileError) {
        if let injected = FaultInjector.shared.failure(for: .truncate, path: path) {
            throw FileError(operation: "ftruncate", path: path, errno: injected)
        }
        while ftruncate(fd, off_t(size)) != 0 {
            if errno != EINTR { throw FileError(operation: "ftruncate", path: path, errno: errno) }
        }
    }

    public static func size(_ fd: CInt, path: String) throws(FileError) -> Int {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw FileError(operation: "fstat", path: path, errno: errno) }
        return Int(st.st_size)
    }

    public static func rename(_ from: String, _ to: String) throws(FileError) {
        if let injected = FaultInjector.shared.failure(for: .rename, path: from) {
            throw FileError(operation: "rename", path: "\(from) -> \(to)", errno: injected)
        }
        guard Glibc.rename(from, to) == 0 else {
            throw FileError(operation: "rename", path: "\(from) -> \(to)", errno: errno)
        }
    }

    public static func unlink(_ path: String) throws(FileError) {
        guard Glibc.unlink(path) == 0 || errno == ENOENT else {
            throw FileError(operation: "unlink", path: path, errno: errno)
        }
    }

    /// mkdir -p.
    public static func makeDirectories(_ path: String, mode: mode_t = 0o750) throws(FileError) {
        var current = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            current += "/" + component
            if mkdir(current, mode) != 0, errno != EEXIST {
                throw FileError(operation: "mkdir", path: current, errno: errno)
            }
        }
    }

    /// Refuses a state directory that someone else could write into (and so plant links or
    /// files in): it must be owned by sinkd's user and writable by no other user (group-writable
    /// only for sinkd's own group).
    public static func checkStateDirectory(_ path: String) throws(FileError) {
        let fd = try open(path, O_RDONLY | O_DIRECTORY)
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw FileError(operation: "fstat", path: path, errno: errno) }
        let uid = geteuid()
        if st.st_uid != uid {
            throw FileError(
                operation: "check", path: path, errno: EPERM,
                detail:
                    "it is owned by uid \(st.st_uid), not by sinkd's user (uid \(uid)); another user could plant files in it. chown it to sinkd's user (systemd's StateDirectory= does)"
            )
        }
        let mode = st.st_mode & 0o7777
        if mode & 0o002 != 0 || (mode & 0o020 != 0 && st.st_gid != getegid()) {
            throw FileError(
                operation: "check", path: path, errno: EPERM,
                detail:
                    "its mode \(String(mode, radix: 8)) lets other users write into it; chmod o-w,g-w it (0750 is what sinkd creates)"
            )
        }
    }

    public static func listDirectory(_ path: String) throws(FileError) -> [String] {
        guard let dir = opendir(path) else { throw FileError(operation: "opendir", path: path, errno: errno) }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != ".", name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    /// Reads a whole (small) file.
    public static func readFile(_ path: String, noFollow: Bool = false) throws(FileError) -> [UInt8] {
        if let injected = FaultInjector.shared.failure(for: .read, path: path) {
            throw FileError(operation: "read", path: path, errno: injected)
        }
        let fd = try open(path, O_RDONLY | (noFollow ? O_NOFOLLOW : 0))
        defer { close(fd) }
        let size = try self.size(fd, path: path)
        var bytes = [UInt8](repeating: 0, count: size)
        var done = 0
        while done < size {
            let n = bytes.withUnsafeMutableBytes { Glibc.pread(fd, $0.baseAddress! + done, size - done, off_t(done)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw FileError(operation: "read", path: path, errno: errno)
            }
            if n == 0 { break }
            done += n
        }
        if done < size { bytes.removeLast(size - done) }
        return bytes
    }

    /// Calls `body` with each line of `path` (without its newline; a last line without one too),
    /// reading 64 KiB at a time: memory is one chunk plus the longest line, whatever the file's
    /// size. `body` returns false to stop.
    public static func forEachLine(
        _ path: String, noFollow: Bool = true, _ body: (ArraySlice<UInt8>) throws -> Bool
    ) throws {
        if let injected = FaultInjector.shared.failure(for: .read, path: path) {
            throw FileError(operation: "read", path: path, errno: injected)
        }
        let fd = try open(path, O_RDONLY | (noFollow ? O_NOFOLLOW : 0))
        defer { close(fd) }
        var pending: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress!, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw FileError(operation: "read", path: path, errno: errno)
            }
            if n == 0 { break }
            var start = 0
            while let newline = chunk[start..<n].firstIndex(of: UInt8(ascii: "\n")) {
                if pending.isEmpty {
                    guard try body(chunk[start..<newline]) else { return }
                } else {
                    pending += chunk[start..<newline]
                    guard try body(pending[...]) else { return }
                    pending.removeAll(keepingCapacity: true)
                }
                start = newline + 1
            }
            pending += chunk[start..<n]
        }
        if !pending.isEmpty { _ = try body(pending[...]) }
    }

    /// Opens `path` for appending without following a link. When this creates the file, the
    /// directory is synced before returning, so that the new entry is as durable as what is then
    /// written and synced into it.
    public static func openForAppend(_ path: String, directory: String, mode: mode_t = 0o640) throws(FileError) -> CInt
    {
        while true {
            let fd = Glibc.open(path, O_WRONLY | O_APPEND | O_NOFOLLOW | O_CLOEXEC)
            if fd >= 0 { return fd }
            if errno == EINTR { continue }
            guard errno == ENOENT else { throw FileError(operation: "open", path: path, errno: errno) }
            let created = Glibc.open(path, O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
            if created < 0 {
                if errno == EEXIST || errno == EINTR { continue }
                throw FileError(operation: "open", path: path, errno: errno)
            }
            do throws(FileError) {
                try syncDirectory(directory)
            } catch {
                close(created)
                throw error
            }
            return created
        }
    }

    /// Writes `bytes` to `path` atomically and durably: a temporary file, fsync, rename, fsync of
    /// the directory. A crash leaves either the old file or the new one, never a mix.
    public static func replaceAtomically(_ path: String, with bytes: [UInt8], directory: String) throws(FileError) {
        let temporary = path + ".tmp"
        // Never through a planted link, never into a file someone else created.
        try unlink(temporary)
        let fd = try open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW)
        do throws(FileError) {
            try writeAll(fd, bytes, path: temporary)
            try dataSync(fd, path: temporary)
        } catch {
            close(fd)
            throw error
        }
        close(fd)
        try rename(temporary, path)
        try syncDirectory(directory)
    }
}

/// Test seam: makes the next writes or fsyncs of files under a directory fail with a chosen errno.
/// Off (and free) unless a test arms it. Scoped by path so that tests running in parallel never
/// see each other's faults.
public final class FaultInjector: @unchecked Sendable {
    public enum Operation: Sendable { case write, fsync, truncate, rename, directorySync, read }
    public static let shared = FaultInjector()

    private let lock = Lock()
    private var armed: [(operation: Operation, errno: CInt, remaining: Int, skip: Int, under: String)] = []

    /// After `skipping` operations of kind `operation` on files under `directory` have gone
    /// through, the next `times` fail with `errno`.
    public func arm(_ operation: Operation, errno: CInt, times: Int = 1, skipping: Int = 0, under directory: String) {
        lock.withLock {
            armed.append((operation, errno, times, skipping, Self.prefix(directory)))
        }
    }

    public func disarm(under directory: String) {
        let prefix = Self.prefix(directory)
        lock.withLock {
            armed.removeAll { $0.under == prefix }
            holds.removeAll { $0.under == prefix }
        }
    }

    /// A test's hold on an operation: the next one of kind `operation` on a file under the
    /// directory blocks, in the thread that makes it, until `release` (so a test can act while
    /// the WAL's writer is inside a round), then fails with the errno given there, or goes
    /// through.
    public final class Hold: @unchecked Sendable {
        let operation: Operation
        let under: String
        private let lock = Lock()
        private var held = false
        private var released: CInt?

        init(_ operation: Operation, under: String) {
            self.operation = operation
            self.under = under
        }

        /// Whether an operation is held, waiting at most `seconds` for one.
        public func waitUntilHeld(seconds: Int) -> Bool {
            let deadline = MonotonicClock.nanos() + UInt64(max(0, seconds)) * 1_000_000_000
            return lock.withLock {
                while !held, MonotonicClock.nanos() < deadline { lock.wait(nanoseconds: 10_000_000) }
                return held
            }
        }

        /// Lets the held operation go on: it fails with `errno`, or goes through with 0.
        public func release(failingWith errno: CInt = 0) {
            lock.withLock {
                released = errno
                lock.broadcast()
            }
        }

        /// In the operation's thread: marks it held and waits for `release`.
        fileprivate func block() -> CInt? {
            lock.withLock {
                held = true
                lock.broadcast()
                while released == nil { lock.wait() }
                return released == 0 ? nil : released
            }
        }
    }

    private var holds: [Hold] = []

    /// Holds the next `operation` under `directory` until the returned hold is released.
    public func hold(_ operation: Operation, under directory: String) -> Hold {
        let hold = Hold(operation, under: Self.prefix(directory))
        lock.withLock { holds.append(hold) }
        return hold
    }

    /// Paths under `directory` start with this.
    private static func prefix(_ directory: String) -> String {
        directory.hasSuffix("/") ? directory : directory + "/"
    }

    func failure(for operation: Operation, path: String) -> CInt? {
        guard lock.withLock({ !armed.isEmpty || !holds.isEmpty }) else { return nil }
        let hold = lock.withLock { () -> Hold? in
            guard let i = holds.firstIndex(where: { $0.operation == operation && path.hasPrefix($0.under) }) else {
                return nil
            }
            return holds.remove(at: i)
        }
        if let hold { return hold.block() }
        return lock.withLock {
            guard let i = armed.firstIndex(where: { $0.operation == operation && path.hasPrefix($0.under) }) else {
                return nil
            }
            if armed[i].skip > 0 {
                armed[i].skip -= 1
                return nil
            }
            let code = armed[i].errno
            armed[i].remaining -= 1
            if armed[i].remaining == 0 { armed.remove(at: i) }
            return code
        }
    }
}

/// A pthread mutex. (NIO's locks would do; the WAL stays free of NIO so that tools and fuzzers
/// can link it alone.)
public final class Lock: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    let condition: UnsafeMutablePointer<pthread_cond_t>

    public init() {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
        condition = .allocate(capacity: 1)
        condition.initialize(to: pthread_cond_t())
        pthread_cond_init(condition, nil)
    }

    deinit {
        pthread_cond_destroy(condition)
        condition.deallocate()
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    @inline(__always) public func withLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }

    /// Waits on the condition; call inside `withLock`.
    func wait() { pthread_cond_wait(condition, mutex) }

    /// Waits at most `nanoseconds`; call inside `withLock`.
    func wait(nanoseconds: Int) {
        var deadline = Self.realtime(after: nanoseconds)
        pthread_cond_timedwait(condition, mutex, &deadline)
    }

    func broadcast() { pthread_cond_broadcast(condition) }

    /// Waits on `other` (a condition of its own, for a thread that must not wake at every
    /// `broadcast()`) at most `nanoseconds`; call inside `withLock`.
    func wait(_ other: Condition, nanoseconds: Int) {
        var deadline = Self.realtime(after: nanoseconds)
        pthread_cond_timedwait(other.condition, mutex, &deadline)
    }

    private static func realtime(after nanoseconds: Int) -> timespec {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var deadline = timespec(
            tv_sec: now.tv_sec + nanoseconds / 1_000_000_000, tv_nsec: now.tv_nsec + nanoseconds % 1_000_000_000)
        if deadline.tv_nsec >= 1_000_000_000 {
            deadline.tv_sec += 1
            deadline.tv_nsec -= 1_000_000_000
        }
        return deadline
    }
}

/// A condition variable used with a `Lock`'s mutex beside the lock's own condition.
final class Condition: @unchecked Sendable {
    let condition: UnsafeMutablePointer<pthread_cond_t>

    init() {
        condition = .allocate(capacity: 1)
        condition.initialize(to: pthread_cond_t())
        pthread_cond_init(condition, nil)
    }

    deinit {
        pthread_cond_destroy(condition)
        condition.deallocate()
    }

    /// Call inside the lock's `withLock`.
    func broadcast() { pthread_cond_broadcast(condition) }
}
