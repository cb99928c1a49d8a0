// Command nswire-restore applies again what a firewall reload or a tc
// command took from running containers: nswire's nftables tables and
// elements, network records and shaping (see pkg/restore). Once, it prints
// what it repaired and exits non-zero on errors; with --watch it repairs
// on every loss it hears of until SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nswire/nswire/pkg/restore"
)

type options struct {
	confDir string
	watch   bool
	level   slog.Level
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "nswire-restore:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: o.level}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ro := restore.Options{ConfDir: o.confDir, Logger: log}
	if o.watch {
		if err := restore.Watch(ctx, ro); err != nil {
			log.Error("nswire-restore stopped", "err", err)
			os.Exit(1)
		}
		return
	}
	r, err := restore.Restore(ctx, ro)
	if !printReport(os.Stdout, r, err) {
		os.Exit(1)
	}
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("nswire-restore", flag.ContinueOnError)
	fs.StringVar(&o.confDir, "cni-conf-dir", restore.DefaultConfDir, "where the runtimes' CNI network configs are")
	fs.BoolVar(&o.watch, "watch", false, "keep running: repair after every loss heard of, until SIGTERM")
	fs.TextVar(&o.level, "log-level", slog.LevelInfo, "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return o, nil
}

// printReport writes what one pass did and reports whether it went
// without errors.
func printReport(w io.Writer, r restore.Report, err error) bool {
	for _, what := range []struct {
		name  string
		items []string
	}{{"table", r.Tables}, {"firewall", r.Firewall}, {"shaping", r.Shaping}, {"record", r.Records}} {
		for _, item := range what.items {
			fmt.Fprintf(w, "restored %s: %s\n", what.name, item)
		}
	}
	for _, warn := range r.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
	for _, e := range r.Errors {
		fmt.Fprintf(w, "error: %v\n", e)
	}
	if err != nil {
		fmt.Fprintf(w, "error: %v\n", err)
	}
	fmt.Fprintf(w, "%d live attachments, %d gone, %d repairs, %d errors in %s\n",
		r.Live, r.Gone, len(r.Tables)+len(r.Firewall)+len(r.Shaping)+len(r.Records), len(r.Errors), r.Took.Round(time.Microsecond))
	return err == nil && len(r.Errors) == 0
}
