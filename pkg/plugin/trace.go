package plugin

import (
	"log/slog"
	"os"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/nswire/nswire/pkg/config"
)

// trace times the steps of one verb and writes one structured line when it
// ends, so an operator can see why a pod's network failed.
type trace struct {
	verb    string
	args    *skel.CmdArgs
	network string
	logFile string
	level   slog.Level
	start   time.Time
	last    time.Time
	steps   []any
}

func newTrace(verb string, args *skel.CmdArgs) *trace {
	now := time.Now()
	return &trace{verb: verb, args: args, start: now, last: now}
}

// start begins the trace of a verb and loads its config with load; the
// trace is returned even when the config is bad, so the failure is still
// logged when a log file could be named.
func start(verb string, args *skel.CmdArgs, load loader) (*trace, *config.Net, error) {
	t := newTrace(verb, args)
	n, err := load(args)
	if err != nil {
		return t, nil, err
	}
	t.configure(n)
	return t, n, nil
}

// A loader reads a verb's config: ADD and CHECK need the container's
// arguments (loadAll); DEL, GC and STATUS only the network's settings
// (loadNetwork), so that no argument can stop a teardown.
type loader func(*skel.CmdArgs) (*config.Net, error)

func loadAll(args *skel.CmdArgs) (*config.Net, error) {
	return config.Load(args.StdinData, args.Args)
}

func loadNetwork(args *skel.CmdArgs) (*config.Net, error) {
	return config.LoadNetwork(args.StdinData)
}

// configure takes the log settings once the config is loaded.
func (t *trace) configure(n *config.Net) {
	t.network, t.logFile = n.Name, n.LogFile
	_ = t.level.UnmarshalText([]byte(n.LogLevel))
}

// step records the time since the previous step under name.
func (t *trace) step(name string) {
	now := time.Now()
	t.steps = append(t.steps, slog.Duration(name, now.Sub(t.last)))
	t.last = now
}

// finish ends the verb: it turns err into the CNI error skel will print
// (cniError), logs the outcome, and returns that error for the verb to
// return. undoErrs are the failures of ADD's rollback.
func (t *trace) finish(err error, undoErrs []error) error {
	err = cniError(t.verb, err)
	if t.logFile == "" {
		return err
	}
	f, ferr := os.OpenFile(t.logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if ferr != nil {
		return err
	}
	defer f.Close()
	log := slog.New(slog.NewJSONHandler(f, &slog.HandlerOptions{Level: t.level}))
	attrs := []any{
		"containerID", t.args.ContainerID, "ifname", t.args.IfName, "netns", t.args.Netns,
		"network", t.network, "total", time.Since(t.start), slog.Group("steps", t.steps...),
	}
	if err == nil {
		log.Info(t.verb, attrs...)
		return nil
	}
	attrs = append(attrs, "error", err.Error())
	if e, ok := err.(*types.Error); ok {
		attrs = append(attrs, "code", e.Code)
	}
	if len(undoErrs) > 0 {
		attrs = append(attrs, "rollbackErrors", slog.Any("errs", undoErrs))
	}
	log.Error(t.verb+" failed", attrs...)
	return err
}
