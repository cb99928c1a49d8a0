package ipam

import "net/netip"

// Attachment names one container interface on a network; it owns the
// addresses reserved for it. A legacy host-local reservation has no IfName.
type Attachment struct {
	ContainerID string
	IfName      string
}

// Reservation is one reserved address and its owner.
type Reservation struct {
	IP    netip.Addr
	Owner Attachment
	// Corrupt marks an entry whose owner cannot be read; it stays reserved
	// because it might belong to a live attachment.
	Corrupt bool
}

// Store keeps the reservations of one network. Every method except Lock
// and Close must be called with the lock held; the lock serializes writers
// across processes.
type Store interface {
	Lock() error
	Unlock() error
	Close() error

	// Held returns the addresses owned by a, in O(1) of the store size.
	Held(a Attachment) ([]netip.Addr, error)
	// Taken reports whether ip is reserved by anyone (corrupt entries count).
	Taken(ip netip.Addr) (bool, error)
	// Reserve makes ips the complete set owned by a: new addresses are
	// added, addresses of a not in ips are released. All or nothing; an
	// address held by another attachment fails with code 11.
	Reserve(a Attachment, ips []netip.Addr) error
	// Release frees everything a owns; releasing nothing is not an error.
	Release(a Attachment) error

	// LastReserved is the allocation cursor of range set `set`.
	LastReserved(set int) (netip.Addr, bool)
	SetLastReserved(set int, ip netip.Addr) error

	// GC releases every reservation whose owner keep rejects and repairs
	// what it can; it may walk the whole store.
	GC(keep func(Attachment) bool) error
	// List returns every reservation (walks the store; for GC and tests).
	List() ([]Reservation, error)
}

// missing returns the members of want that are not in have.
func missing(want, have []netip.Addr) []netip.Addr {
	var out []netip.Addr
	for _, ip := range want {
		if !containsAddr(have, ip) {
			out = append(out, ip)
		}
	}
	return out
}

func containsAddr(list []netip.Addr, ip netip.Addr) bool {
	for _, x := range list {
		if x == ip {
			return true
		}
	}
	return false
}
