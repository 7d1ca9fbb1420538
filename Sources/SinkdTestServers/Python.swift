import Foundation

/// python3 as the tests and benchmarks run it (the independent peers and reference
/// implementations: boto's signer, kafka-python's message classes, confluent-kafka, pika): its
/// stdout, or an error carrying its stderr. A missing module fails the test that needs it.
public enum Python {
    /// Runs `python3 arguments...` and returns its standard output.
    public static func run(_ arguments: [String]) throws -> String {
        try ServerProcess.run("/usr/bin/env", ["python3"] + arguments)
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
