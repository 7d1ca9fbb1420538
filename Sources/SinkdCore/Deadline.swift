/// The deadline of `withDeadline` passed before its operation finished.
public struct DeadlineExceeded: Error, Sendable, Equatable, CustomStringConvertible {
    public init() {}
    public var description: String { "the deadline passed" }
}

/// Runs `operation` until `deadline`: past it the operation's task is cancelled and this throws
/// `DeadlineExceeded`. For the waits a client cannot bound otherwise (AsyncHTTPClient's deadline
/// ends at the response head; a body can trickle for ever): one deadline then covers connecting,
/// the head and the whole body. The operation must end when cancelled (AsyncHTTPClient's body
/// iteration does: it cancels the request).
public func withDeadline<T: Sendable>(
    _ deadline: ContinuousClock.Instant, _ operation: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await operation() }
        group.addTask {
            try await Task.sleep(until: deadline, clock: .continuous)
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let value = first else { throw DeadlineExceeded() }
        return value
    }
}
