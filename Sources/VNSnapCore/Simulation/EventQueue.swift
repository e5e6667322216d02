/// A min-heap of timed events, first in first out among equal times.
///
/// The heap orders small plain keys; the events (messages, often large) stay in slots and are moved once in and
/// once out, so sifting costs a few integer swaps whatever the event.
struct EventQueue<Event> {
    /// One heap entry: when, in what order among equal times, and the slot holding the event.
    private struct Key {
        var time: Int64
        var order: UInt64
        var slot: Int

        func precedes(_ other: Key) -> Bool {
            self.time != other.time ? self.time < other.time : self.order < other.order
        }
    }

    private var heap: [Key] = []
    private var slots: [Event?] = []
    private var freeSlots: [Int] = []
    private var counter: UInt64 = 0

    var isEmpty: Bool { self.heap.isEmpty }
    var count: Int { self.heap.count }
    var nextTime: Int64? { self.heap.first?.time }

    mutating func push(_ event: Event, at time: Int64) {
        self.counter &+= 1
        let slot: Int
        if let free = self.freeSlots.popLast() {
            slot = free
            self.slots[slot] = event
        } else {
            slot = self.slots.count
            self.slots.append(event)
        }
        let key = Key(time: time, order: self.counter, slot: slot)
        // Sift up by moving parents down into the hole, then drop the key in once.
        var child = self.heap.count
        self.heap.append(key)
        while child > 0 {
            let parent = (child - 1) / 2
            guard key.precedes(self.heap[parent]) else { break }
            self.heap[child] = self.heap[parent]
            child = parent
        }
        self.heap[child] = key
    }

    mutating func pop() -> (time: Int64, event: Event)? {
        guard let top = self.heap.first else { return nil }
        let last = self.heap.removeLast()
        if !self.heap.isEmpty {
            // Sift the last key down from the root through the hole.
            var parent = 0
            let count = self.heap.count
            while true {
                let left = 2 * parent + 1
                guard left < count else { break }
                let right = left + 1
                let smaller = right < count && self.heap[right].precedes(self.heap[left]) ? right : left
                guard self.heap[smaller].precedes(last) else { break }
                self.heap[parent] = self.heap[smaller]
                parent = smaller
            }
            self.heap[parent] = last
        }
        let event = self.slots[top.slot].take()!  // !-safe: every key's slot holds its event until popped
        self.freeSlots.append(top.slot)
        return (top.time, event)
    }
}
