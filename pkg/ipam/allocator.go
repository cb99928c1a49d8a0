package ipam

import (
	"net/netip"
)

// Lease is the address an attachment holds in one range set.
type Lease struct {
	Set   int
	Range Range
	IP    netip.Addr
}

// allocator hands out one address per range set; the store must be locked.
type allocator struct {
	store Store
	sets  []RangeSet
}

// allocate returns a's leases, reusing what a already holds in each range
// set (so a repeated ADD is idempotent) and allocating the rest. Requested
// addresses are granted all or nothing: nothing is written unless every
// range set got its address.
func (al allocator) allocate(a Attachment, requested []netip.Addr) ([]Lease, error) {
	want, err := al.assign(requested)
	if err != nil {
		return nil, err
	}
	held, err := al.store.Held(a)
	if err != nil {
		return nil, err
	}
	leases := make([]Lease, len(al.sets))
	var fresh []int
	for i := range al.sets {
		ip, ok := want[i]
		if !ok {
			ip, ok = al.heldIn(i, held)
		}
		if ok && !containsAddr(held, ip) {
			if err := al.checkFree(ip); err != nil {
				return nil, err
			}
		}
		if !ok {
			if ip, err = al.next(i, leases); err != nil {
				return nil, err
			}
			fresh = append(fresh, i)
		}
		leases[i] = al.lease(i, ip)
	}
	if err := al.store.Reserve(a, addrs(leases)); err != nil {
		return nil, err
	}
	for _, i := range fresh {
		// The cursor is only a hint (round robin); losing it is harmless.
		_ = al.store.SetLastReserved(i, leases[i].IP)
	}
	return leases, nil
}

// assign maps each requested address to the range set that contains it.
func (al allocator) assign(requested []netip.Addr) (map[int]netip.Addr, error) {
	want := map[int]netip.Addr{}
	for _, ip := range requested {
		i, ok := al.setOf(ip)
		if !ok {
			return nil, configError("ips", "requested address %s is outside every range", ip)
		}
		if al.sets[i].isGateway(ip) {
			return nil, configError("ips", "requested address %s is the gateway", ip)
		}
		if prev, dup := want[i]; dup {
			return nil, configError("ips", "%s and %s fall into the same range set; one address per range set", prev, ip)
		}
		want[i] = ip
	}
	return want, nil
}

func (al allocator) setOf(ip netip.Addr) (int, bool) {
	for i, s := range al.sets {
		if _, ok := s.find(ip); ok {
			return i, true
		}
	}
	return 0, false
}

func (al allocator) heldIn(set int, held []netip.Addr) (netip.Addr, bool) {
	for _, ip := range held {
		if _, ok := al.sets[set].find(ip); ok && !al.sets[set].isGateway(ip) {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

func (al allocator) checkFree(ip netip.Addr) error {
	taken, err := al.store.Taken(ip)
	if err != nil {
		return err
	}
	if taken {
		return busyError("requested address %s is already reserved by another attachment", ip)
	}
	return nil
}

// next scans from the address after the set's cursor, so a just-released
// address is not handed out again until the set wraps around. Each probe
// is O(1); a long scan only happens when most of the set is taken.
func (al allocator) next(set int, chosen []Lease) (netip.Addr, error) {
	s := al.sets[set]
	start := s[0].RangeStart
	if last, ok := al.store.LastReserved(set); ok {
		if _, in := s.find(last); in {
			start = s.after(last)
		}
	}
	ip := start
	for {
		free, err := al.usable(s, ip, chosen)
		if err != nil || free {
			return ip, err
		}
		if ip = s.after(ip); ip == start {
			return netip.Addr{}, busyError("no free address in range set %d (%s)", set, s)
		}
	}
}

func (al allocator) usable(s RangeSet, ip netip.Addr, chosen []Lease) (bool, error) {
	if s.isGateway(ip) || containsAddr(addrs(chosen), ip) {
		return false, nil
	}
	taken, err := al.store.Taken(ip)
	return !taken, err
}

// leases returns what a holds per range set; missing sets are reported by
// index so CHECK can name them.
func (al allocator) leases(a Attachment) ([]Lease, []int, error) {
	held, err := al.store.Held(a)
	if err != nil {
		return nil, nil, err
	}
	var out []Lease
	var absent []int
	for i := range al.sets {
		if ip, ok := al.heldIn(i, held); ok {
			out = append(out, al.lease(i, ip))
		} else {
			absent = append(absent, i)
		}
	}
	return out, absent, nil
}

// hasFree reports whether range set `set` could serve one more ADD.
func (al allocator) hasFree(set int) (bool, error) {
	_, err := al.next(set, nil)
	if err == nil {
		return true, nil
	}
	if isBusy(err) {
		return false, nil
	}
	return false, err
}

func (al allocator) lease(set int, ip netip.Addr) Lease {
	s := al.sets[set]
	i, _ := s.find(ip)
	return Lease{Set: set, Range: s[i], IP: ip}
}

func addrs(leases []Lease) []netip.Addr {
	out := make([]netip.Addr, 0, len(leases))
	for _, l := range leases {
		if l.IP.IsValid() {
			out = append(out, l.IP)
		}
	}
	return out
}
