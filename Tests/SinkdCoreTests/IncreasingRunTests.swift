import SinkdCore
import Testing

/// IncreasingRun: a run kept as bounds, a list once an element breaks it; the same elements,
/// order and indices either way.
struct IncreasingRunTests {
    @Test func aRunStaysARun() {
        var run = IncreasingRun<Int>()
        #expect(run.isEmpty)
        #expect(run.isRun(from: 0))
        for i in 5..<9 { run.append(i) }
        #expect(run.count == 4)
        #expect(Array(run) == [5, 6, 7, 8])
        #expect(run[2] == 7)
        #expect(run.last == 8)
        #expect(run.isRun(from: 5))
        #expect(!run.isRun(from: 4), "a run that does not start where asked is not one from there")
        #expect(Array(run[1...]) == [6, 7, 8])
    }

    @Test func aGapTurnsItIntoAListThatKeepsEveryElement() {
        var run = IncreasingRun<UInt64>()
        for n: UInt64 in [3, 4, 7, 8, 12] { run.append(n) }
        #expect(run.count == 5)
        #expect(Array(run) == [3, 4, 7, 8, 12])
        #expect(run[2] == 7)
        #expect(!run.isRun(from: 3))
        #expect(Array(run[3...]) == [8, 12])
        let broken = IncreasingRun<Int>([9, 11])
        #expect(Array(broken) == [9, 11])
        #expect(IncreasingRun<Int>(4..<7).isRun(from: 4), "a run given whole stays a run")
    }
}
