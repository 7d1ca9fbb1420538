import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A tmpfs of a few MiB mounted for one test (needs root, as CI runs: a failure to mount fails the
/// test rather than skipping it). Unmounted when released.
public final class SmallFileSystem {
    public let path: String

    public init(bytes: Int) throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("sinkd-tmpfs-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        let status = try Self.run("/bin/mount", ["-t", "tmpfs", "-o", "size=\(bytes)", "tmpfs", path])
        guard status == 0 else {
            throw TestFailure("mount -t tmpfs failed (status \(status)): the disk-fault tests need root")
        }
    }

    deinit {
        _ = try? Self.run("/bin/umount", ["-l", path])
        try? FileManager.default.removeItem(atPath: path)
    }

    /// Fills the file system with a file of up to `bytes` (what fits); returns its path.
    public func fill(_ name: String = "filler", bytes: Int = .max) -> String {
        let file = path + "/" + name
        let fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        defer { close(fd) }
        let chunk = [UInt8](repeating: 0x55, count: 64 << 10)
        var written = 0
        while written < bytes {
            let n = chunk.withUnsafeBytes { write(fd, $0.baseAddress, min($0.count, bytes - written)) }
            if n <= 0 { break }
            written += n
        }
        return file
    }

    static func run(_ tool: String, _ arguments: [String]) throws -> Int32 {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: tool)
        p.arguments = arguments
        p.standardError = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        return p.terminationStatus
    }
}

public struct TestFailure: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
