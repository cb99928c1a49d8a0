package link

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// VethSpec describes one veth pair: the host end stays in the caller's
// namespace, the peer is born inside the container's.
type VethSpec struct {
	HostName    string
	Alias       string
	PeerName    string
	PeerNetNSFd int
	PeerMAC     net.HardwareAddr // nil: kernel's choice
	MTU         int
	MasterIndex int // bridge index; 0 in routed mode
}

// ErrNotOwned reports a link that carries another owner's marker, or none.
var ErrNotOwned = errors.New("not nswire's")

// CreateVeth creates the pair in one RTM_NEWLINK (host end enslaved, peer
// born directly in the netns: creating then moving it costs a second netns
// change per container), then marks the host end and brings it up.
func CreateVeth(s VethSpec) (netlink.Link, error) {
	if err := newVeth(s); err != nil {
		return nil, err
	}
	host, err := netlink.LinkByName(s.HostName)
	if err != nil {
		return nil, fmt.Errorf("look up new veth %q: %w", s.HostName, err)
	}
	// The kernel ignores IFLA_IFALIAS in RTM_NEWLINK: mark and bring up in
	// one RTM_SETLINK.
	if err := markUp(host.Attrs().Index, s.Alias); err != nil {
		_ = netlink.LinkDel(host)
		return nil, fmt.Errorf("mark veth %q: %w", s.HostName, err)
	}
	host.Attrs().Alias = s.Alias
	host.Attrs().Flags |= net.FlagUp
	return host, nil
}

// markUp sets the ifalias and brings the link up in one request. It also
// turns off IPv6 address generation: no automatic link-local address on
// the host end, as a bridge port needs none, routed mode adds its own, and
// one per container (with its DAD churn) would make every address dump on
// the host grow and restart. The kernel applies that setting after the
// flags, but the peer is still down: without carrier the kernel has not
// generated an address yet, and does so only when the container end comes
// up, by which time the mode is set.
func markUp(index int, alias string) error {
	return linkChange{index: index, up: true, alias: alias, addrGenNone: true}.apply()
}

func oneQueue(add func(nl.NetlinkRequestData)) {
	add(nl.NewRtAttr(unix.IFLA_NUM_TX_QUEUES, nl.Uint32Attr(1)))
	add(nl.NewRtAttr(unix.IFLA_NUM_RX_QUEUES, nl.Uint32Attr(1)))
}

// newVeth is built by hand: netlink.LinkAdd can express every other
// attribute here (Group, NumTxQueues, PeerNamespace...), but it sends
// IFLA_MASTER in a second request after the creation. The host end must be
// a port of the bridge from birth: GC recognises a host end that a killed
// ADD left unmarked by its group and its bridge (gcHalfMade), and one
// outside any bridge could be any network's.
func newVeth(s VethSpec) error {
	req := nl.NewNetlinkRequest(unix.RTM_NEWLINK, unix.NLM_F_CREATE|unix.NLM_F_EXCL|unix.NLM_F_ACK)
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC)) // down until marked (CreateVeth)
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(s.HostName)))
	// The alias cannot be set in RTM_NEWLINK; the device group can, so a
	// host end caught between creation and marking is still recognisable.
	req.AddData(nl.NewRtAttr(unix.IFLA_GROUP, nl.Uint32Attr(OwnerGroup)))
	if s.MTU > 0 {
		req.AddData(nl.NewRtAttr(unix.IFLA_MTU, nl.Uint32Attr(uint32(s.MTU))))
	}
	if s.MasterIndex > 0 {
		req.AddData(nl.NewRtAttr(unix.IFLA_MASTER, nl.Uint32Attr(uint32(s.MasterIndex))))
	}
	// One queue each way, what the kernel leaves in use anyway: without
	// the attributes it allocates one per CPU and then cuts the real count
	// to one, which waits for an RCU grace period per end while holding
	// RTNL (synchronize_net in netif_set_real_num_tx_queues).
	oneQueue(req.AddData)
	info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
	info.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated("veth"))
	data := info.AddRtAttr(nl.IFLA_INFO_DATA, nil)
	peer := data.AddRtAttr(nl.VETH_INFO_PEER, nl.NewIfInfomsg(unix.AF_UNSPEC).Serialize())
	peer.AddRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(s.PeerName))
	if s.MTU > 0 {
		peer.AddRtAttr(unix.IFLA_MTU, nl.Uint32Attr(uint32(s.MTU)))
	}
	if s.PeerMAC != nil {
		peer.AddRtAttr(unix.IFLA_ADDRESS, []byte(s.PeerMAC))
	}
	oneQueue(func(a nl.NetlinkRequestData) { peer.AddChild(a) })
	peer.AddRtAttr(unix.IFLA_NET_NS_FD, nl.Uint32Attr(uint32(s.PeerNetNSFd)))
	req.AddData(info)
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	if errors.Is(err, unix.EOPNOTSUPP) {
		return FeatureError(fmt.Sprintf("create veth %q", s.HostName), "veth", err)
	}
	if err != nil {
		return fmt.Errorf("create veth %q (peer %q): %w", s.HostName, s.PeerName, err)
	}
	return nil
}

// OwnedLink returns the host link named name if it carries alias; nil, nil
// when there is no such link. A link of that name without the marker is
// somebody else's and yields an error, so nswire never deletes it.
func OwnedLink(name, alias string) (netlink.Link, error) {
	l, err := netlink.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up %q: %w", name, err)
	}
	if a := l.Attrs(); a.Alias != alias && !(a.Alias == "" && a.Group == OwnerGroup) {
		return nil, fmt.Errorf("link %q (alias %q): %w", name, l.Attrs().Alias, ErrNotOwned)
	}
	return l, nil
}

// DeleteOwned removes the host veth (and with it the container end) when
// it is this attachment's; absent is success.
func DeleteOwned(name, alias string) error {
	d, err := StartDeleteOwned(name, alias)
	if err != nil {
		return err
	}
	return d.Wait()
}

// StartDeleteOwned is DeleteOwned returning as soon as both ends are
// unlisted; see Deletion.
func StartDeleteOwned(name, alias string) (*Deletion, error) {
	l, err := OwnedLink(name, alias)
	if err != nil || l == nil {
		return finished(nil), err
	}
	return StartDelete(l), nil
}
