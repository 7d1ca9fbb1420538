import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Benchmarks/heapcount.c built as an LD_PRELOAD library: a process started with `environment`
/// counts its heap calls into `countsFile`, which `read()` takes while it runs. The counts are
/// deterministic where CPU times are not, so tests can bound heap calls per record.
public struct HeapCounter: Sendable {
    public let library: String
    public let countsFile: String

    public struct Counts: Sendable {
        public var calls: UInt64
        public var bytes: UInt64
        public static func - (a: Counts, b: Counts) -> Counts {
            Counts(calls: a.calls &- b.calls, bytes: a.bytes &- b.bytes)
        }
    }

    public struct BuildFailure: Error, CustomStringConvertible {
        public var description: String
    }

    /// The C source, found from this file's place in the repository.
    public static let source = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Benchmarks/heapcount.c").path

    /// Compiles the library into `directory` with the system's C compiler (cc, else the
    /// toolchain's clang).
    public static func build(into directory: String) throws -> HeapCounter {
        let library = directory + "/libheapcount.so"
        let compiler = ["/usr/bin/cc", "/usr/bin/clang"].first { FileManager.default.isExecutableFile(atPath: $0) }
        let process = Process()
        if let compiler {
            process.executableURL = URL(fileURLWithPath: compiler)
            process.arguments = ["-O2", "-shared", "-fPIC", "-o", library, source]
        } else {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["clang", "-O2", "-shared", "-fPIC", "-o", library, source]
        }
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw BuildFailure(description: "cannot build \(source) into \(library): \(message)")
        }
        return HeapCounter(library: library, countsFile: directory + "/heapcounts")
    }

    /// What a process needs in its environment to be counted.
    public var environment: [String: String] {
        ["LD_PRELOAD": library, "SINKD_HEAP_COUNTS": countsFile]
    }

    /// The counts so far (zero before the counted process started).
    public func read() -> Counts {
        guard let data = FileManager.default.contents(atPath: countsFile), data.count >= 16 else {
            return Counts(calls: 0, bytes: 0)
        }
        let words = data.withUnsafeBytes { raw in
            (
                raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self),
                raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
            )
        }
        return Counts(calls: UInt64(littleEndian: words.0), bytes: UInt64(littleEndian: words.1))
    }
}
