import NIOCore
import NIOEmbedded
import Synchronization
import Testing
@testable import SinkdDelivery

/// The pipeline's wake-up timer on an embedded loop, whose clock only moves when told to.
@Suite struct WakeTimerTests {
    final class Fired: Sendable {
        let count = Atomic(0)
        var value: Int { count.load(ordering: .relaxed) }
        func callback() -> @Sendable () -> Void { { self.count.add(1, ordering: .relaxed) } }
    }

    /// A timer on a fresh embedded loop, and the counter its callbacks bump.
    static func timer() -> (EmbeddedEventLoop, Fired, WakeTimer) {
        let loop = EmbeddedEventLoop()
        return (loop, Fired(), WakeTimer(loop: loop))
    }

    @Test func armingTheArmedDeadlineAgainSchedulesNothing() {
        var (loop, fired, timer) = Self.timer()
        for _ in 0..<1000 { timer.arm(at: 5_000, now: 0, fired.callback()) }
        #expect(timer.scheduled == 1)
        loop.advanceTime(by: .milliseconds(4_999))
        #expect(fired.value == 0)
        loop.advanceTime(by: .milliseconds(1))
        #expect(fired.value == 1)
    }

    @Test func aNewDeadlineReplacesTheArmedOneWhichNeverFires() {
        var (loop, fired, timer) = Self.timer()
        timer.arm(at: 1_000, now: 0, fired.callback())
        timer.arm(at: 300, now: 0, fired.callback())
        #expect(timer.scheduled == 2)
        #expect(timer.deadline == 300)
        loop.advanceTime(by: .milliseconds(300))
        #expect(fired.value == 1)
        loop.advanceTime(by: .seconds(10))
        #expect(fired.value == 1)
    }

    /// An idle deadline moves later with every record: the armed, earlier one stays, fires, and
    /// the pipeline arms the later one then (one scheduled task per idle_timeout, not per record).
    @Test func aLaterDeadlineKeepsTheArmedOne() {
        var (loop, fired, timer) = Self.timer()
        timer.arm(at: 300, now: 0, fired.callback())
        for later in 301...1_300 { timer.arm(at: UInt64(later), now: 0, fired.callback()) }
        #expect(timer.scheduled == 1)
        #expect(timer.deadline == 300)
        loop.advanceTime(by: .milliseconds(300))
        #expect(fired.value == 1)
        timer.fired(300)
        timer.arm(at: 1_300, now: 300, fired.callback())
        #expect(timer.scheduled == 2)
        loop.advanceTime(by: .milliseconds(1_000))
        #expect(fired.value == 2)
    }

    @Test func aDeadlineInThePastFiresOnTheNextTick() {
        var (loop, fired, timer) = Self.timer()
        timer.arm(at: 100, now: 900, fired.callback())
        loop.advanceTime(by: .zero)
        #expect(fired.value == 1)
    }

    @Test func onlyTheWakeUpThatFiredIsForgotten() {
        var (_, fired, timer) = Self.timer()
        timer.arm(at: 1_000, now: 0, fired.callback())
        timer.fired(400)  // a wake from a replaced timer: the armed one stays
        #expect(timer.deadline == 1_000)
        timer.arm(at: 1_000, now: 0, fired.callback())
        #expect(timer.scheduled == 1)
        timer.fired(1_000)
        #expect(timer.deadline == nil)
        // Armed again for the same deadline after it fired (the wall clock stepped back, say): a new one.
        timer.arm(at: 1_000, now: 900, fired.callback())
        #expect(timer.scheduled == 2)
    }

    @Test func cancelledWakeUpsNeverFire() {
        var (loop, fired, timer) = Self.timer()
        timer.arm(at: 50, now: 0, fired.callback())
        timer.cancel()
        #expect(timer.deadline == nil)
        loop.advanceTime(by: .seconds(1))
        #expect(fired.value == 0)
    }
}
