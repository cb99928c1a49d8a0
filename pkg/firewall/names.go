package firewall

import (
	"fmt"
	"net"
	"strconv"

	"github.com/nswire/nswire/pkg/ident"
)

func hash(parts ...string) string { return ident.Hex(32, parts...) }

// netTag is 8 hex digits naming a network inside chain names, so that GC can
// find one network's chains by prefix.
func netTag(network string) string { return hash(network)[:8] }

// attTag is 16 hex digits naming an attachment (collisions need 2^32
// attachments on one network).
func attTag(id ident.Attachment) string { return id.Hex(16) }

// names are the per-attachment objects, all derived from the identity.
type names struct {
	owner string // element comment: network/containerID/ifname
	att   string // inet chain recording the published keys
	guard string // anti-spoof record chain (bridge table, or inet table in routed mode)
}

func namesOf(id ident.Attachment) names {
	n, a := netTag(id.Network), attTag(id)
	return names{
		owner: id.String(),
		att:   attPrefix + n + "-" + a,
		guard: guardPrefix + n + "-" + a,
	}
}

// ownedBy reports whether an element's comment names the attachment whose
// chains nm names. GC knows an attachment only by the tags in its chain
// names, so the comment's identity is hashed back to them.
func ownedBy(comment string, nm names) bool {
	id, ok := ident.ParseAttachment(comment)
	return ok && namesOf(id).att == nm.att
}

// portKey is one published (family, protocol, host address, host port):
// exactly one element of one ports map.
type portKey struct {
	fam      family
	wildcard bool   // every host address of the family
	hostIP   net.IP // nil when any
	proto    string // tcp, udp, sctp
	hostPort int
	ctrIP    net.IP
	ctrPort  int
}

func (k portKey) set() string { return dnatSet(k.fam, k.wildcard) }

// data is the DNAT map datum of k: the container address, then port.
func (k portKey) data() []byte {
	return concat(ipBytes(k.ctrIP, k.fam), be16(k.ctrPort))
}

func (k portKey) key() []byte {
	pp := []byte{protoNums[k.proto]}
	if k.wildcard {
		return concat(pp, be16(k.hostPort))
	}
	return concat(ipBytes(k.hostIP, k.fam), pp, be16(k.hostPort))
}

func (k portKey) hostString() string {
	h := "0.0.0.0"
	if k.fam == ipv6 {
		h = "::"
	}
	if !k.wildcard {
		h = k.hostIP.String()
	}
	return net.JoinHostPort(h, strconv.Itoa(k.hostPort))
}

func (k portKey) String() string {
	return fmt.Sprintf("hostPort %s/%s", k.hostString(), k.proto)
}

// record is the comment of the a- chain rule recording the key; DEL and GC parse
// it back to find the element to delete without any other state.
func (k portKey) record() string {
	return fmt.Sprintf("nswire port %s %s -> %s", k.proto, k.hostString(),
		net.JoinHostPort(k.ctrIP.String(), strconv.Itoa(k.ctrPort)))
}

func parseRecord(s string) (portKey, bool) {
	var proto, host, ctr string
	if _, err := fmt.Sscanf(s, "nswire port %s %s -> %s", &proto, &host, &ctr); err != nil {
		return portKey{}, false
	}
	hh, hp, err1 := net.SplitHostPort(host)
	ch, cp, err2 := net.SplitHostPort(ctr)
	if err1 != nil || err2 != nil || protoNums[proto] == 0 {
		return portKey{}, false
	}
	k := portKey{proto: proto, hostIP: net.ParseIP(hh), ctrIP: net.ParseIP(ch)}
	k.hostPort, err1 = strconv.Atoi(hp)
	k.ctrPort, err2 = strconv.Atoi(cp)
	if err1 != nil || err2 != nil || k.hostIP == nil || k.ctrIP == nil {
		return portKey{}, false
	}
	k.fam = famOf(k.hostIP)
	if k.hostIP.IsUnspecified() {
		k.wildcard, k.hostIP = true, nil
	}
	return k, true
}

// portKeys expands an attachment's mappings into map elements: a mapping
// without hostIP is published on each family the container has.
func portKeys(a *Attachment) []portKey {
	var keys []portKey
	for _, p := range a.Ports {
		for _, fam := range mappingFamilies(p) {
			ip := ctrIP(a, fam)
			if ip == nil {
				continue
			}
			k := portKey{fam: fam, wildcard: true, proto: p.Proto, hostPort: int(p.HostPort),
				ctrIP: ip, ctrPort: int(p.ContainerPort)}
			if p.HostAddr.IsValid() && !p.HostAddr.IsUnspecified() {
				k.wildcard, k.hostIP = false, net.IP(p.HostAddr.AsSlice())
			}
			keys = append(keys, k)
		}
	}
	return keys
}
