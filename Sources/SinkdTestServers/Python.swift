import Foundation

/// python3 as the tests and benchmarks run it (the independent peers and reference
/// implementations: boto's signer, kafka-python's message classes, confluent-kafka, pika): its
/// stdout, or an error carrying its stderr. A missing module fails the test that needs it.
public enum Python {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// Runs `python3 arguments...` and returns its standard output.
    public static func run(_ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3"] + arguments
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        // Both pipes read to the end before waiting: a chatty script never blocks on a full pipe.
        let errors = ReadToEnd(err.fileHandleForReading)
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw Failure(
                description: "python3 \(arguments.first ?? ""): \(String(decoding: errors.wait(), as: UTF8.self))")
        }
        return String(decoding: data, as: UTF8.self)
    }
}

/// Reads a file handle to its end on a thread of its own (a child's stderr beside its stdout).
public final class ReadToEnd: @unchecked Sendable {
    private var data = Data()
    private let done = DispatchSemaphore(value: 0)

    public init(_ handle: FileHandle) {
        Thread.detachNewThread { [self] in
            data = handle.readDataToEndOfFile()
            done.signal()
        }
    }

    public func wait() -> Data {
        done.wait()
        return data
    }
}
