#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// A blocking client of the ingest socket: what `sinkd send`, the benchmark and the tests use.
/// Writing and reading may happen on two threads at once (pipelining).
public final class IngestClient: @unchecked Sendable {
    public let fd: CInt
    private var buffer: [UInt8] = []
    private var start = 0

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        /// The errno of the failed call (0 when there was none).
        public var code: Int32
        public init(description: String, code: Int32 = 0) {
            self.description = description
            self.code = code
        }
        /// The socket exists but this user may not use it (its mode, owner, or a directory on the way).
        public var isPermissionDenied: Bool { code == EACCES || code == EPERM }
    }

    public init(path: String) throws {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket: \(String(cString: strerror(errno)))") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            close(fd)
            throw Failure(description: "socket path too long: \(path)")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard rc == 0 else {
            let code = errno
            close(fd)
            throw Failure(description: "cannot connect to \(path): \(String(cString: strerror(code)))", code: code)
        }
        self.fd = fd
    }

    deinit { close(fd) }

    /// Writes all of `bytes`; false if the server closed the connection.
    @discardableResult
    public func write(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = send(fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
                if n < 0 {
                    if errno == EINTR { continue }
                    return false
                }
                offset += n
            }
            return true
        }
    }

    /// Tells the server nothing more will be sent (it answers what it has, then closes).
    public func finishWriting() {
        shutdown(fd, Int32(SHUT_WR))
    }

    /// The next response line without its newline; nil at end of stream or after `timeoutMillis`.
    public func readLine(timeoutMillis: Int32 = -1) -> [UInt8]? {
        while true {
            if let newline = buffer[start...].firstIndex(of: UInt8(ascii: "\n")) {
                let line = Array(buffer[start..<newline])
                start = newline + 1
                if start > 1 << 16 {
                    buffer.removeFirst(start)
                    start = 0
                }
                return line
            }
            if timeoutMillis >= 0 {
                var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                let ready = poll(&p, 1, timeoutMillis)
                if ready <= 0 { return nil }
            }
            var chunk = [UInt8](repeating: 0, count: 64 << 10)
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
            if n < 0, errno == EINTR { continue }
            if n <= 0 { return nil }
            buffer.append(contentsOf: chunk[0..<n])
        }
    }
}
