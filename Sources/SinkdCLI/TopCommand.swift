#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import Foundation
import SinkdControl
import SinkdCore

/// `sinkd top`: the live view. Fetches the status over the control socket every interval and
/// paints TopView's lines; on a terminal in the alternate screen with the keyboard in
/// non-canonical mode (q or Ctrl-C leaves and restores both), in a pipe as plain blocks of lines.
struct Top: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A live view of the running daemon: per-sink rates, backlog, oldest record, state and last error.",
        discussion: """
            Refreshes every --interval seconds over control.socket (root only, like status). On a \
            terminal: q or Ctrl-C leaves and restores the terminal; the sinks with problems come \
            first; a narrow terminal drops the least important columns. Without a terminal (a pipe, \
            or --plain): one block of plain lines per refresh, each starting with "--- HH:MM:SS". \
            Exit 0 when left; 2 if sinkd cannot be reached at the first refresh.
            """
    )

    @OptionGroup var config: ConfigOption

    @Option(help: ArgumentHelp("Seconds between refreshes (0.2 to 60).", valueName: "seconds"))
    var interval: Double = 1

    @Option(
        help: ArgumentHelp("Leave after this many refreshes (default: until q, Ctrl-C or SIGTERM).", valueName: "n"))
    var count: Int = 0

    @Flag(help: "Plain lines even on a terminal, as a pipe gets them.")
    var plain = false

    func validate() throws {
        guard interval >= 0.2, interval <= 60 else {
            throw ValidationError("--interval must be between 0.2 and 60 seconds, got \(interval)")
        }
        guard count >= 0 else { throw ValidationError("--count must be 0 or more, got \(count)") }
    }

    func run() throws {
        let socket = try config.load().control.socket
        let signals = try SignalWaiter([SIGINT, SIGTERM, SIGHUP, SIGWINCH])
        let screen = (!plain && isatty(STDOUT_FILENO) == 1 && isatty(STDIN_FILENO) == 1) ? TerminalScreen() : nil
        defer { screen?.restore() }

        var previous: (report: StatusReport, at: ContinuousClock.Instant)?
        var shown: StatusReport?
        var drawn: Drawn?
        var lastError: String?
        var refreshes = 0
        let clock = ContinuousClock()
        var next = clock.now
        while true {
            let at = clock.now
            do {
                let response = try Control.request(["command": "status"], socket: socket)
                let data = try JSONSerialization.data(withJSONObject: response["status"] ?? [:])
                let report = try JSONDecoder().decode(StatusReport.self, from: data)
                let seconds =
                    previous.map {
                        Double((at - $0.at).components.seconds) + Double((at - $0.at).components.attoseconds) / 1e18
                    } ?? 0
                drawn = Drawn(previous: previous?.report, current: report, seconds: seconds)
                paint(draw(drawn!, screen), on: screen)
                previous = (report, at)
                shown = report
                lastError = nil
            } catch {
                if shown == nil {
                    screen?.restore()
                    Terminal.printError("sinkd top: \(error)")
                    throw ExitCode(2)
                }
                lastError = "cannot refresh: \(error) (trying again every \(interval) s)"
                paint(["sinkd top: " + TopView.oneLine(lastError!)], on: screen)
            }
            refreshes += 1
            if count > 0, refreshes >= count { return }
            next = max(next + .milliseconds(Int(interval * 1000)), clock.now)
            // Wait for the next refresh, a key, or a signal.
            waiting: while true {
                let remaining = clock.now.duration(to: next)
                guard remaining > .zero else { break }
                let millis = Int32(
                    min(
                        Double(remaining.components.seconds) * 1000 + Double(remaining.components.attoseconds) / 1e15,
                        60_000))
                switch signals.wait(millis: max(millis, 1), keyboard: screen != nil) {
                case .timeout:
                    break waiting
                case .key(let bytes):
                    if bytes.contains(where: { [UInt8(ascii: "q"), UInt8(ascii: "Q"), 0x03, 0x04].contains($0) }) {
                        return
                    }
                case .signal(SIGWINCH):
                    screen?.measure()
                    if let drawn, lastError == nil { paint(draw(drawn, screen), on: screen) }
                case .signal:
                    return
                }
            }
        }
    }

    /// What the screen shows, kept to draw it again at a new size.
    struct Drawn {
        var previous: StatusReport?
        var current: StatusReport
        var seconds: Double
    }

    private func draw(_ d: Drawn, _ screen: TerminalScreen?) -> [String] {
        TopView.render(
            previous: d.previous, current: d.current, seconds: d.seconds, width: screen?.size.columns ?? 200,
            height: screen?.size.rows ?? .max, now: Date(), plain: screen == nil)
    }

    private func paint(_ lines: [String], on screen: TerminalScreen?) {
        if let screen {
            screen.paint(lines)
        } else {
            var text = "--- " + TopView.clock(Date()) + "\n"
            for line in lines { text += line + "\n" }
            FileHandle.standardOutput.write(Data(text.utf8))
        }
    }
}

/// The terminal while `top` runs: the alternate screen, the cursor hidden, the keyboard in
/// non-canonical mode without echo or signal keys (Ctrl-C arrives as a byte, so leaving always
/// goes through `restore`). `restore` puts everything back; it runs once.
final class TerminalScreen {
    private var saved = termios()
    private var restored = false
    private(set) var size = (rows: 24, columns: 80)

    init() {
        tcgetattr(STDIN_FILENO, &saved)
        var raw = saved
        raw.c_lflag &= ~tcflag_t(ICANON | ECHO | ISIG)
        withUnsafeMutableBytes(of: &raw.c_cc) { cc in
            cc[Int(VMIN)] = 0
            cc[Int(VTIME)] = 0
        }
        tcsetattr(STDIN_FILENO, TCSANOW, &raw)
        measure()
        write("\u{1B}[?1049h\u{1B}[?25l\u{1B}[H\u{1B}[2J")
    }

    func measure() {
        var w = winsize()
        if ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), &w) == 0, w.ws_col > 0, w.ws_row > 0 {
            size = (Int(w.ws_row), Int(w.ws_col))
        }
    }

    /// Each line from the top left, the rest of each line and of the screen cleared: no flicker.
    func paint(_ lines: [String]) {
        var text = "\u{1B}[H"
        for line in lines.prefix(size.rows) { text += line + "\u{1B}[K\r\n" }
        text += "\u{1B}[J"
        write(text)
    }

    func restore() {
        guard !restored else { return }
        restored = true
        write("\u{1B}[?25h\u{1B}[?1049l")
        tcsetattr(STDIN_FILENO, TCSANOW, &saved)
    }

    private func write(_ text: String) {
        let bytes = Array(text.utf8)
        var done = 0
        while done < bytes.count {
            let n = bytes[done...].withUnsafeBytes { Glibc.write(STDOUT_FILENO, $0.baseAddress, $0.count) }
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { return }
            done += n
        }
    }
}

/// Waits for a timeout, keyboard input or one of `signals`. The signals are ignored as such and
/// reported by Dispatch signal sources through a pipe, so that SIGINT/SIGTERM end `top` through its
/// normal exit and the terminal is always restored.
final class SignalWaiter {
    enum Event: Equatable {
        case timeout
        case key([UInt8])
        case signal(Int32)
    }

    private let pipeFDs: (read: Int32, write: Int32)
    private var sources: [DispatchSourceSignal] = []

    init(_ signals: [Int32]) throws {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw Control.ControlError("pipe failed: \(String(cString: strerror(errno)))") }
        for fd in fds {
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        }
        pipeFDs = (fds[0], fds[1])
        let writeFD = fds[1]
        for number in signals {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                var byte = UInt8(truncatingIfNeeded: number)
                _ = Glibc.write(writeFD, &byte, 1)
            }
            source.resume()
            sources.append(source)
        }
    }

    deinit {
        for source in sources { source.cancel() }
        close(pipeFDs.read)
        close(pipeFDs.write)
    }

    func wait(millis: Int32, keyboard: Bool) -> Event {
        var fds = [pollfd(fd: pipeFDs.read, events: Int16(POLLIN), revents: 0)]
        if keyboard { fds.append(pollfd(fd: STDIN_FILENO, events: Int16(POLLIN), revents: 0)) }
        let ready = poll(&fds, nfds_t(fds.count), millis)
        guard ready > 0 else { return .timeout }
        if fds[0].revents & Int16(POLLIN) != 0 {
            var byte: UInt8 = 0
            return read(pipeFDs.read, &byte, 1) == 1 ? .signal(Int32(byte)) : .timeout
        }
        if keyboard, fds[1].revents & Int16(POLLIN | POLLHUP) != 0 {
            var buffer = [UInt8](repeating: 0, count: 64)
            let n = read(STDIN_FILENO, &buffer, buffer.count)
            // End of input (the terminal went away) leaves like q.
            return n > 0 ? .key(Array(buffer[0..<n])) : .key([0x04])
        }
        return .timeout
    }
}
