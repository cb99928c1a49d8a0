package restore

import (
	"errors"
	"fmt"
	"slices"

	"github.com/vishvananda/netlink"

	"github.com/nswire/nswire/pkg/firewall"
	"github.com/nswire/nswire/pkg/intent"
	"github.com/nswire/nswire/pkg/link"
	"github.com/nswire/nswire/pkg/shaping"
)

// attachment is an intent whose container is alive: its host veth exists
// and carries the attachment's alias.
type attachment struct {
	in     intent.Intent
	fw     *firewall.Attachment
	limits shaping.Limits
	index  int // the host veth's ifindex
}

func (a *attachment) id() string {
	return a.in.Network + "/" + a.in.ContainerID + "/" + a.in.IfName
}

// host is what one scan found.
type host struct {
	live  []*attachment // in the order their veths were created
	gone  int           // intents whose veth is gone
	errs  []error
	seen  map[string]bool         // live attachments by id
	links map[string]netlink.Link // every link of the namespace by name
}

// scan reads the intents of nets and keeps the live ones.
func scan(nets []network, h *netlink.Handle) (*host, error) {
	links, err := link.LinkList(h)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	byName := make(map[string]netlink.Link, len(links))
	for _, l := range links {
		byName[l.Attrs().Name] = l
	}
	hs := &host{seen: map[string]bool{}, links: byName}
	for _, n := range nets {
		for _, dir := range n.dirs {
			ins, err := intent.Load(dir)
			if err != nil {
				hs.errs = append(hs.errs, fmt.Errorf("network %q: %w", n.name, err))
				continue
			}
			for _, in := range ins {
				hs.add(n.name, in)
			}
		}
	}
	// Ifindexes grow with each link made: the creation order of the veths.
	slices.SortFunc(hs.live, func(a, b *attachment) int { return a.index - b.index })
	return hs, nil
}

func (hs *host) add(network string, in intent.Intent) {
	if in.Network != network {
		return // not this network's file
	}
	if !owned(hs.links[in.HostIf], in) {
		hs.gone++
		return
	}
	a := &attachment{in: in, limits: in.Limits(), index: hs.links[in.HostIf].Attrs().Index}
	if hs.seen[a.id()] {
		return // read from two dataDirs
	}
	hs.seen[a.id()] = true
	var err error
	if a.fw, err = in.Attachment(); err != nil {
		hs.errs = append(hs.errs, err)
		return
	}
	hs.live = append(hs.live, a)
}

// owned reports whether l is the host veth of in's attachment.
func owned(l netlink.Link, in intent.Intent) bool {
	return l != nil && l.Attrs().Alias == link.Alias(in.ID())
}

// stillLive looks the attachment's veth up again: the same link (by
// index) must still be there.
func stillLive(h *netlink.Handle, a *attachment) (bool, error) {
	l, err := h.LinkByName(a.in.HostIf)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return false, nil
		}
		return false, err
	}
	return l.Attrs().Index == a.index && owned(l, a.in), nil
}
