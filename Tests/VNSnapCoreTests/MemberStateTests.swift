import Foundation
import Testing
import VNSnapCore

/// `MemberState` keeps its metadata in a shared box: value semantics must be unchanged.
@Suite struct MemberStateTests {
    @Test func test_metadata_isAValue_copiesAreIndependent_equalityAndHashingFollowTheContent() throws {
        let original = SWIMFixtures.state("a")
        var copy = original
        copy.metadata.storeCapacity = 42
        #expect(original.metadata.storeCapacity == 0)
        #expect(copy != original)
        var same = SWIMFixtures.state("a")
        same.metadata = SWIMFixtures.metadata  // a different box with equal content
        #expect(same == original)
        #expect(same.hashValue == original.hashValue)
        let json = try JSONEncoder().encode(copy)
        #expect(try JSONDecoder().decode(MemberState.self, from: json) == copy)
        #expect(String(decoding: json, as: UTF8.self).contains("\"storeCapacity\":42"))
    }
}
