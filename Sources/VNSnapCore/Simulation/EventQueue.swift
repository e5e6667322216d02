/// A min-heap of timed events, first in first out among equal times.
struct EventQueue<Event> {
    private var heap: [(time: Int64, order: UInt64, event: Event)] = []
    private var counter: UInt64 = 0

    var isEmpty: Bool { self.heap.isEmpty }
    var count: Int { self.heap.count }
    var nextTime: Int64? { self.heap.first?.time }

    mutating func push(_ event: Event, at time: Int64) {
        self.counter &+= 1
        self.heap.append((time, self.counter, event))
        var child = self.heap.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard self.less(child, parent) else { break }
            self.heap.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> (time: Int64, event: Event)? {
        guard !self.heap.isEmpty else { return nil }
        self.heap.swapAt(0, self.heap.count - 1)
        let top = self.heap.removeLast()
        var parent = 0
        while true {
            let left = 2 * parent + 1
            let right = left + 1
            var smallest = parent
            if left < self.heap.count, self.less(left, smallest) { smallest = left }
            if right < self.heap.count, self.less(right, smallest) { smallest = right }
            if smallest == parent { break }
            self.heap.swapAt(parent, smallest)
            parent = smallest
        }
        return (top.time, top.event)
    }

    private func less(_ a: Int, _ b: Int) -> Bool {
        (self.heap[a].time, self.heap[a].order) < (self.heap[b].time, self.heap[b].order)
    }
}
