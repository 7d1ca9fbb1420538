import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Runs a `credential_process` command with bounds on everything it can do to sinkd (issue 33):
///
/// - It gets a process group of its own; at the deadline, when it printed too much, and as soon
///   as its shell exited, the whole group is killed, so a child left holding stdout
///   (`sleep 100000 & exit 0`) cannot keep sinkd waiting for an end of file.
/// - stdout and stderr are read together (poll), so a helper writing much to stderr before its
///   JSON cannot block on a full pipe while sinkd waits on the other.
/// - stdout may hold `maxStdout` bytes (more is a failure); of stderr the first `keptStderr`
///   bytes are kept for the error message and the rest read and dropped.
///
/// Blocking: run it on a thread pool.
enum CredentialProcess {
    struct Output: Equatable {
        /// The exit status, or nil when it was killed by a signal (`signal` says which).
        var status: Int32?
        var signal: Int32?
        var stdout: [UInt8]
        var stderr: [UInt8]
    }

    enum Failure: Error, Equatable, CustomStringConvertible {
        case cannotStart(String)
        case timedOut(Duration)
        case tooMuchOutput(Int)

        var description: String {
            switch self {
            case .cannotStart(let why): "credential_process could not start: \(why)"
            case .timedOut(let limit):
                "credential_process did not finish within \(limit.components.seconds) s; its process group was killed"
            case .tooMuchOutput(let limit):
                "credential_process printed more than \(limit) bytes (a credentials JSON is far smaller); its process group was killed"
            }
        }
    }

    static func run(
        _ command: String, timeout: Duration, maxStdout: Int = 1 << 20, keptStderr: Int = 4096
    ) throws(Failure) -> Output {
        var outPipe: [Int32] = [-1, -1], errPipe: [Int32] = [-1, -1]
        guard pipe(&outPipe) == 0 else { throw .cannotStart("pipe: \(String(cString: strerror(errno)))") }
        guard pipe(&errPipe) == 0 else {
            close(outPipe[0]); close(outPipe[1])
            throw .cannotStart("pipe: \(String(cString: strerror(errno)))")
        }
        // Not inherited by anything else sinkd starts; dup2 gives the child its own 1 and 2.
        for fd in outPipe + errPipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // A process group of its own (its id is the child's pid), default signal dispositions and
        // an empty mask (sinkd's threads block some signals; the helper must not inherit that).
        posix_spawnattr_setpgroup(&attributes, 0)
        var none = sigset_t(), all = sigset_t()
        sigemptyset(&none)
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(
            &attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var pid: pid_t = 0
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/sh"), strdup("-c"), strdup(command), nil]
        defer { for a in argv { free(a) } }
        let spawned = posix_spawn(&pid, "/bin/sh", &actions, &attributes, argv, environ)
        close(outPipe[1])
        close(errPipe[1])
        defer { close(outPipe[0]); close(errPipe[0]) }
        guard spawned == 0 else { throw .cannotStart(String(cString: strerror(spawned))) }

        let deadline = ContinuousClock.now + timeout
        var stdout: [UInt8] = [], stderr: [UInt8] = []
        var open = [true, true]
        var exitStatus: Int32?
        var failure: Failure?
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        while open[0] || open[1] {
            let remaining = deadline - ContinuousClock.now
            if remaining <= .zero {
                failure = .timedOut(timeout)
                break
            }
            var fds = [
                pollfd(fd: outPipe[0], events: Int16(POLLIN), revents: 0),
                pollfd(fd: errPipe[0], events: Int16(POLLIN), revents: 0),
            ]
            for i in 0..<2 where !open[i] { fds[i].fd = -1 }
            let millis = Int32(
                min(
                    100,
                    max(
                        1,
                        remaining.components.seconds * 1000 + remaining.components.attoseconds / 1_000_000_000_000_000))
            )
            let ready = poll(&fds, 2, millis)
            if ready < 0, errno != EINTR { break }
            for i in 0..<2 where open[i] && fds[i].revents != 0 {
                let n = buffer.withUnsafeMutableBytes { read(fds[i].fd, $0.baseAddress!, $0.count) }
                if n < 0, errno == EINTR || errno == EAGAIN { continue }
                if n <= 0 {
                    open[i] = false
                    continue
                }
                if i == 0 {
                    guard stdout.count + n <= maxStdout else {
                        failure = .tooMuchOutput(maxStdout)
                        break
                    }
                    stdout.append(contentsOf: buffer[..<n])
                } else if stderr.count < keptStderr {
                    stderr.append(contentsOf: buffer[..<min(n, keptStderr - stderr.count)])
                }
            }
            if failure != nil { break }
            if exitStatus == nil {
                // Exited? Asked without reaping it, so that its group id cannot be reused before
                // the group is killed: what the shell left running (holding our pipes) goes with it.
                var info = siginfo_t()
                if waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0, info._sifields._kill.si_pid == pid
                {
                    kill(-pid, SIGKILL)
                    exitStatus = reap(pid)
                }
            }
        }
        if exitStatus == nil {
            kill(-pid, SIGKILL)
            exitStatus = reap(pid)
        }
        if let failure { throw failure }
        let status = exitStatus ?? 0
        let signal = status & 0x7f
        return Output(
            status: signal == 0 ? (status >> 8) & 0xff : nil, signal: signal == 0 ? nil : signal, stdout: stdout,
            stderr: stderr)
    }

    private static func reap(_ pid: pid_t) -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0, errno == EINTR {}
        return status
    }
}
