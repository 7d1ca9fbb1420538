import Foundation
import Testing
@testable import SinkdSQSSink
import SinkdTestSupport

/// credential_process with helpers that misbehave (issue 33): each run ends in bounded time and
/// memory, with the reason.
// .timeLimit: a guard against a hang, not a measurement. It counts the wait for a blocking test
// slot (BlockingThreads) too, which on a loaded CI machine has taken over a minute.
@Suite(.serialized, .blockingThreads, .timeLimit(.minutes(5))) struct CredentialProcessTests {
    static let json = #"{"Version": 1, "AccessKeyId": "AKID", "SecretAccessKey": "secret"}"#

    @Test func theJSONOfAWellBehavedHelper() throws {
        let out = try CredentialProcess.run("printf '%s' '\(Self.json)'; echo note >&2", timeout: .seconds(10))
        #expect(out.status == 0)
        #expect(String(decoding: out.stdout, as: UTF8.self) == Self.json)
        #expect(String(decoding: out.stderr, as: UTF8.self) == "note\n")
    }

    /// The review: `sleep 100000 & exit 0` stalled the sink past the 60 s kill, which reached only
    /// /bin/sh while the sleep held stdout. Its group goes when the shell exits.
    @Test func aChildLeftHoldingStdoutDoesNotHoldTheRun() throws {
        let start = ContinuousClock.now
        let out = try CredentialProcess.run("sleep 100000 & printf '%s' '\(Self.json)'; exit 0", timeout: .seconds(30))
        #expect(ContinuousClock.now - start < .seconds(5))
        #expect(out.status == 0)
        #expect(String(decoding: out.stdout, as: UTF8.self) == Self.json)
        #expect(try Self.survivors("sleep 100000").isEmpty, "the background sleep was killed with its group")
    }

    /// The review: 200 KB on stderr before the JSON blocked both sides (stdout was read to its end
    /// first). Both pipes are read together; 4 KiB of stderr is kept.
    @Test func muchStderrBeforeTheJSONDoesNotBlock() throws {
        let out = try CredentialProcess.run(
            "head -c 300000 /dev/zero | tr '\\\\0' e >&2; printf '%s' '\(Self.json)'", timeout: .seconds(10))
        #expect(out.status == 0)
        #expect(String(decoding: out.stdout, as: UTF8.self) == Self.json)
        #expect(out.stderr.count == 4096)
    }

    /// The review: a helper printing 2 GB took sinkd to 4.9 GB. stdout is capped at 1 MiB.
    @Test func tooMuchOutputIsRefusedAtTheCap() throws {
        let start = ContinuousClock.now
        #expect(throws: CredentialProcess.Failure.tooMuchOutput(1 << 20)) {
            _ = try CredentialProcess.run("cat /dev/zero", timeout: .seconds(30))
        }
        #expect(ContinuousClock.now - start < .seconds(5))
    }

    @Test func aHelperThatNeverEndsIsKilledAtTheDeadlineWithItsGroup() throws {
        let start = ContinuousClock.now
        #expect(throws: CredentialProcess.Failure.timedOut(.seconds(1))) {
            _ = try CredentialProcess.run("sleep 100001 & sleep 100001", timeout: .seconds(1))
        }
        #expect(ContinuousClock.now - start < .seconds(5))
        #expect(try Self.survivors("sleep 100001").isEmpty)
    }

    @Test func exitStatusAndSignalAreReported() throws {
        #expect(try CredentialProcess.run("echo sealed >&2; exit 3", timeout: .seconds(10)).status == 3)
        let killed = try CredentialProcess.run("kill -TERM $$", timeout: .seconds(10))
        #expect(killed.status == nil && killed.signal == SIGTERM)
    }

    /// Processes whose command line contains `pattern` (pgrep), after a moment for SIGKILL to land.
    static func survivors(_ pattern: String) throws -> [String] {
        Thread.sleep(forTimeInterval: 0.2)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/pgrep")
        p.arguments = ["-f", "^" + pattern]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        p.waitUntilExit()
        return String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).split(separator: "\n")
            .map(String.init)
    }
}
