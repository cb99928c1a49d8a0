package ipam

import (
	"net/netip"
	"slices"
	"sync"
)

// MemStore is the in-memory Store used by unit tests of the allocator; it
// follows the same contract as the disk store (see the conformance suite).
type MemStore struct {
	mu     sync.Mutex
	owners map[netip.Addr]Attachment
	byAtt  map[Attachment][]netip.Addr
	cursor map[int]netip.Addr
}

var _ Store = (*MemStore)(nil)

func NewMemStore() *MemStore {
	return &MemStore{
		owners: map[netip.Addr]Attachment{},
		byAtt:  map[Attachment][]netip.Addr{},
		cursor: map[int]netip.Addr{},
	}
}

func (m *MemStore) Lock() error   { m.mu.Lock(); return nil }
func (m *MemStore) Unlock() error { m.mu.Unlock(); return nil }
func (m *MemStore) Close() error  { return nil }

func (m *MemStore) Held(a Attachment) ([]netip.Addr, error) {
	return slices.Clone(m.byAtt[a]), nil
}

func (m *MemStore) Taken(ip netip.Addr) (bool, error) {
	_, ok := m.owners[ip]
	return ok, nil
}

func (m *MemStore) Reserve(a Attachment, ips []netip.Addr) error {
	for _, ip := range ips {
		if owner, ok := m.owners[ip]; ok && owner != a {
			return busyError("address %s is already reserved", ip)
		}
	}
	m.release(a)
	for _, ip := range ips {
		m.owners[ip] = a
	}
	if len(ips) > 0 {
		m.byAtt[a] = slices.Clone(ips)
	}
	return nil
}

func (m *MemStore) Release(a Attachment) error {
	m.release(a)
	return nil
}

func (m *MemStore) release(a Attachment) {
	for _, ip := range m.byAtt[a] {
		delete(m.owners, ip)
	}
	delete(m.byAtt, a)
}

func (m *MemStore) LastReserved(set int) (netip.Addr, bool) {
	ip, ok := m.cursor[set]
	return ip, ok
}

func (m *MemStore) SetLastReserved(set int, ip netip.Addr) error {
	m.cursor[set] = ip
	return nil
}

func (m *MemStore) GC(keep func(Attachment) bool) error {
	for a := range m.byAtt {
		if !keep(a) {
			m.release(a)
		}
	}
	return nil
}

func (m *MemStore) List() ([]Reservation, error) {
	var out []Reservation
	for ip, a := range m.owners {
		out = append(out, Reservation{IP: ip, Owner: a})
	}
	slices.SortFunc(out, func(x, y Reservation) int { return x.IP.Compare(y.IP) })
	return out, nil
}
