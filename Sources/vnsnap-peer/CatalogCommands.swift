import ArgumentParser
import Foundation
import VNSnapCore
import VNSnapPeer

/// `vnsnap-peer list`: committed snapshots.
struct ListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "List the committed snapshots this host's peer knows.",
        discussion: PeerSocketOptions.socketDiscussion
    )

    @OptionGroup var peer: PeerSocketOptions

    @Flag(name: .long, help: "Print JSON (stable field names).")
    var json = false

    func run() async throws {
        let entries = try await self.peer.send(ControlRequest(command: "list")).snapshots ?? []
        if self.json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(entries.map(SnapshotFormatter.ListRow.init)), as: UTF8.self))
        } else {
            print(SnapshotFormatter.list(entries), terminator: "")
        }
    }
}

/// `vnsnap-peer show ID`: one snapshot's manifest and per-VM table.
struct ShowCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show",
        abstract: "Show a committed snapshot: its manifest and the per-VM measurements.",
        discussion: PeerSocketOptions.socketDiscussion
    )

    @OptionGroup var peer: PeerSocketOptions

    @Argument(help: "The snapshot id (from `vnsnap-peer list`).")
    var id: UInt64

    @Flag(name: .long, help: "Print the manifest as stored (JSON).")
    var json = false

    func run() async throws {
        let response = try await self.peer.send(ControlRequest(command: "show", id: self.id))
        guard let manifest = response.manifest else {
            throw failure("the peer returned no manifest")
        }
        try SnapshotFormatter.show(manifest, json: self.json, locations: response.replicaLocations ?? [:])
    }
}

/// `vnsnap-peer delete ID`: a snapshot's images everywhere and its catalog rows.
struct DeleteCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "delete",
        abstract: "Delete a snapshot: its images on every peer and its catalog rows.",
        discussion: PeerSocketOptions.socketDiscussion
    )

    @OptionGroup var peer: PeerSocketOptions

    @Argument(help: "The snapshot id.")
    var id: UInt64

    func run() async throws {
        let response = try await self.peer.send(ControlRequest(command: "delete", id: self.id), timeout: .seconds(30))
        print("snapshot \(self.id) deleted")
        for note in response.notes ?? [] { print("note: \(note)") }
    }
}

/// `vnsnap-peer restore ID`: the whole VIOLIN back to the snapshot.
struct RestoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract:
            "Restore every VM of a snapshot's VIOLIN, with the frames that were in flight, and resume them together.",
        discussion: """
            Every peer holding VMs of the snapshot first verifies every chunk of its images (a corrupted or \
            missing chunk stops the restore here, before any VM is touched); then each stops its VMs and starts \
            them paused from their images with the switch at the snapshot's epoch; then the recorded channel \
            state is re-injected and all VMs resume together. The VIOLIN's running VMs are stopped: the command \
            asks first, unless --yes.

            Every VM is restored where it runs now (after a move or a host loss, not necessarily where it ran at \
            the cut). A VM whose peer is not alive is restored on a surviving peer with the vm role (the one \
            running fewest of the snapshot's VMs), or where --on VM=PEER says; --on may also move a VM away from \
            an alive peer (its copy there stops at the switch-over). A VM restored away from the peer it ran on at \
            the cut gets its images from their replicas on store peers (snapshots taken with --target memory), the \
            initiator records its new owner, and that peer runs it from then on. A VM with a disk moves only if \
            its frozen disk files are reachable at the same paths there (shared storage).

            """ + PeerSocketOptions.socketDiscussion
    )

    @OptionGroup var peer: PeerSocketOptions

    @Argument(help: "The snapshot id.")
    var id: UInt64

    @Flag(name: .long, help: "Do not ask before stopping the VIOLIN's running VMs.")
    var yes = false

    @Flag(name: .long, help: "Do not re-inject the recorded channel state (only to see what it is for).")
    var noReplay = false

    @Flag(name: .long, help: "Refuse at once, naming it, if an operation runs on the VIOLIN (default: wait in line).")
    var noWait = false

    @Option(
        name: .customLong("on"),
        help: ArgumentHelp(
            "Run a VM on this peer: one whose peer is lost, or a move (repeatable).",
            valueName: "VM=PEER"
        )
    )
    var placements: [String] = []

    func validate() throws {
        _ = try self.chosen()
    }

    /// The `--on` choices, VM → peer.
    func chosen() throws -> [String: String] {
        var chosen: [String: String] = [:]
        for placement in self.placements {
            let parts = placement.split(separator: "=", omittingEmptySubsequences: false).map(String.init)
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                throw ValidationError("--on \(placement): expected VM=PEER")
            }
            guard chosen.updateValue(parts[1], forKey: parts[0]) == nil else {
                throw ValidationError("--on: VM \(parts[0]) is placed twice")
            }
        }
        return chosen
    }

    func run() async throws {
        var confirmed = self.yes
        if !confirmed {
            let manifest = try await self.peer.send(ControlRequest(command: "show", id: self.id)).manifest
            let vms = manifest?.vms.map { "\($0.name) on \($0.peer)" }.joined(separator: ", ") ?? "?"
            guard isatty(STDIN_FILENO) != 0 else {
                throw failure(
                    "restoring snapshot \(self.id) stops and replaces the VMs of its VIOLIN (\(vms)); nothing was stopped: pass --yes"
                )
            }
            print("Restoring snapshot \(self.id) stops and replaces \(vms). Go on? [y/N] ", terminator: "")
            fflush(nil)
            confirmed = ["y", "yes"].contains(readLine()?.lowercased() ?? "")
            guard confirmed else { throw failure("not confirmed; nothing was stopped") }
        }
        let started = ContinuousClock.now
        let response = try await self.peer.send(
            ControlRequest(
                command: "restore",
                id: self.id,
                yes: true,
                replay: !self.noReplay,
                on: try self.chosen(),
                wait: !self.noWait
            ),
            timeout: .seconds(3600)
        ) { line in
            SnapshotFormatter.progress(line, since: started, toStandardError: false)
        }
        print(SnapshotFormatter.restoreTable(response.restore ?? [:]), terminator: "")
    }
}
