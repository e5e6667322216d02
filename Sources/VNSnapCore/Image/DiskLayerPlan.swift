/// What to do with a VM's disk layers that no snapshot needs any more (DESIGN §6): the pure half of merging
/// disk chains when snapshots are deleted.
///
/// Every snapshot freezes the file the VM writes to and continues it on a new overlay, so without merging each
/// snapshot adds a layer for good, and every read of the VM walks a longer chain. Restores branch the files
/// into a tree (a new overlay on the restored snapshot's frozen image). Given that tree, which files pin a
/// snapshot, and which file the VM runs on, the plan keeps every pinned file and every file below one, removes
/// files nothing needs, and merges each run of unpinned layers into the one file above them, so a chain is
/// never longer than the snapshots it serves, plus the VM's own overlay.
public struct DiskLayerPlan: Sendable, Hashable {
    /// One step; the shell carries out one, reads the files again and plans anew.
    public enum Action: Sendable, Hashable {
        /// A file nothing needs and nothing is built on: delete it.
        case remove(String)
        /// Copy the layers `dropping` (lowest last) into `into`, so that `into` rests on `base` instead; the
        /// dropped files are removed once that is done. `into` reads the same before and after.
        case merge(into: String, dropping: [String], base: String)
    }

    /// Every file of the VM's disk and the file it rests on (`nil` for the bottom one).
    public var parents: [String: String?]
    /// The files this peer made for the VM and may remove or merge; the configured disk is not one of them.
    public var owned: Set<String>
    /// The frozen images of the VM's snapshots that still exist (or may still commit).
    public var pinned: Set<String>
    /// The file the VM writes to, if it has one.
    public var active: String?

    /// Creates a plan over the given files.
    public init(parents: [String: String?], owned: Set<String>, pinned: Set<String>, active: String?) {
        self.parents = parents
        self.owned = owned
        self.pinned = pinned
        self.active = active
    }

    /// The steps, removals first; empty when the chain is as short as it can be.
    public var actions: [Action] {
        var tree = self.parents
        var actions: [Action] = []
        // Leaves nothing needs go first, then the files that made bare by that, and so on.
        var removed = true
        while removed {
            removed = false
            let children = Self.children(tree)
            for file in tree.keys.sorted() where self.isFree(file) && (children[file] ?? []).isEmpty {
                tree[file] = nil
                actions.append(.remove(file))
                removed = true
            }
        }
        let children = Self.children(tree)
        var dropped: Set<String> = []
        // Each run of free layers goes into the file above its top one, in one copy.
        // Only into files of ours: the configured disk may rest on files here (a `disk` pointed at an overlay).
        for file in tree.keys.sorted()
        where self.owned.contains(file) && !(self.isFree(file) && children[file]?.count == 1) {
            var run: [String] = []
            var below = tree[file] ?? nil
            while let layer = below, self.isFree(layer), children[layer]?.count == 1, !dropped.contains(layer),
                let next = tree[layer] ?? nil
            {
                run.append(layer)
                below = next
            }
            guard let base = below, !run.isEmpty else { continue }
            dropped.formUnion(run)
            actions.append(.merge(into: file, dropping: run, base: base))
        }
        return actions
    }

    /// A file of ours that no snapshot pins and the VM does not write to.
    private func isFree(_ file: String) -> Bool {
        self.owned.contains(file) && !self.pinned.contains(file) && file != self.active
    }

    private static func children(_ tree: [String: String?]) -> [String: [String]] {
        var children: [String: [String]] = [:]
        for (file, parent) in tree {
            if let parent { children[parent, default: []].append(file) }
        }
        return children
    }
}
