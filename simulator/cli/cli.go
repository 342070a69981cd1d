// Package cli is the simulator's command line: which scenarios to run, how to print the
// result, and the exit status (0 every expectation holds, 1 one failed or the run broke,
// 2 a scenario is invalid or the command line is wrong).
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"github.com/tollgate-dev/tollgate/internal/version"
	"github.com/tollgate-dev/tollgate/simulator/demo"
	"github.com/tollgate-dev/tollgate/simulator/engine"
	"github.com/tollgate-dev/tollgate/simulator/report"
	"github.com/tollgate-dev/tollgate/simulator/scenario"
	"github.com/tollgate-dev/tollgate/simulator/sim"
)

// Exit statuses.
const (
	ExitOK      = 0
	ExitFailed  = 1
	ExitInvalid = 2
)

// DefaultPath is what a bare `simulator` runs: the shipped scenarios, from the repository root.
const DefaultPath = "scenarios"

const usage = `usage:
  simulator [run] [--report DIR] [--seed N] [--format text|json] [--engine redis|model] [PATH...]
  simulator whatif --trace DECISIONS.jsonl --config FILE [--engine redis|model]
  simulator demo

Replays scenario files (or every *.yaml under a folder) through Tollgate's real limiter on
an embedded Redis with virtual time, and checks the properties each expects. Without a PATH
it runs the scenarios in ./scenarios. Flags may come before or after the paths.

  --report DIR   also write DIR/index.html (charts), DIR/report.json and DIR/report.txt
  --seed N       seed for every scenario (default: each scenario's seed, else 1)
  --format F     text (default) or json, on standard output
  --engine E     redis (default): the real limiter on an embedded Redis; model: the
                 reference model decides, much faster for big traces, the same decisions,
                 but the properties that need Redis are not applicable

whatif replays a decision log under the rateLimiting of FILE (a scenario, or an MCPServer
manifest: its spec.rateLimiting and metadata) and prints the calls that would now be
rejected or admitted, per user and per tool.

Memory: the simulator sets a soft memory limit of 8/5 of the working set it expects (users,
their per-user buckets, a trace's events); GOMEMLIMIT, when set, replaces it (off: none).

Exit status: 0 every expectation holds, 1 one failed (or a run broke), 2 a scenario is
invalid (the message names file, line and field) or the command line is wrong.
`

// Main runs the command line args (without the program name) and returns the exit status.
// Messages to the terminal are best effort (their write errors ignored): the exit status
// carries the verdict, and nothing can be done about a closed standard error.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch a := args[0]; {
		case a == "run":
			args = args[1:]
		case a == "demo" && len(args) == 1:
			if err := demo.Run(ctx, stdout); err != nil {
				_, _ = fmt.Fprintln(stderr, "simulator:", err)
				return ExitFailed
			}
			return ExitOK
		case a == "whatif":
			return whatIf(ctx, args[1:], stdout, stderr)
		case a == "version" || a == "-version" || a == "--version":
			_, _ = fmt.Fprintln(stdout, "simulator", version.String())
			return ExitOK
		case a == "help" || a == "-h" || a == "-help" || a == "--help":
			_, _ = fmt.Fprint(stdout, usage)
			return ExitOK
		case !strings.HasPrefix(a, "-"):
			_, _ = fmt.Fprintf(stderr, "simulator: unknown command %q\n\n%s", a, usage)
			return ExitInvalid
		}
	}
	o, err := parse(args)
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "simulator: %v\n\n%s", err, usage)
		return ExitInvalid
	}
	return run(ctx, o, nil, stdout, stderr)
}

type options struct {
	paths  []string
	report string
	seed   *uint64
	format string
	engine string
}

// parse reads flags anywhere among the paths: `simulator run scenarios/ --seed 3` works.
func parse(args []string) (options, error) {
	o := options{format: "text"}
	fs := flag.NewFlagSet("simulator run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.report, "report", "", "")
	fs.StringVar(&o.format, "format", "text", "")
	fs.StringVar(&o.engine, "engine", sim.EngineRedis, "")
	seed := fs.String("seed", "", "")
	for {
		if err := fs.Parse(args); err != nil {
			return o, err
		}
		if fs.NArg() == 0 {
			break
		}
		o.paths = append(o.paths, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if *seed != "" {
		n, err := strconv.ParseUint(*seed, 10, 64)
		if err != nil {
			return o, fmt.Errorf("--seed %q: want a non-negative integer", *seed)
		}
		o.seed = &n
	}
	if o.format != "text" && o.format != "json" {
		return o, fmt.Errorf("--format %q: want text or json", o.format)
	}
	if err := checkEngine(o.engine); err != nil {
		return o, err
	}
	if len(o.paths) == 0 {
		o.paths = []string{DefaultPath}
	}
	return o, nil
}

// run loads every scenario first (any invalid one stops everything with exit 2 before a
// single replay), then replays them, a few at a time, and reports in file order.
func run(ctx context.Context, o options, newLimiter engine.LimiterFunc, stdout, stderr io.Writer) int {
	files, err := scenario.Files(o.paths)
	if err != nil {
		if len(o.paths) == 1 && o.paths[0] == DefaultPath && errors.Is(err, os.ErrNotExist) {
			err = fmt.Errorf("no %s folder here: run from the repository root, or name scenario files or folders", DefaultPath)
		}
		_, _ = fmt.Fprintln(stderr, "simulator:", err)
		return ExitInvalid
	}
	var prepared []*sim.Prepared
	invalid := false
	names := map[string]string{}
	for _, f := range files {
		s, err := scenario.Load(f)
		if err == nil {
			if other, dup := names[s.Name]; dup {
				err = s.Errorf("name", "%q is also the name of %s: names identify scenarios in reports", s.Name, other)
			}
		}
		var p *sim.Prepared
		if err == nil {
			names[s.Name] = f
			p, err = sim.Prepare(s, o.seed)
		}
		if err == nil {
			p.Engine = o.engine
		}
		if err != nil {
			_, _ = fmt.Fprintln(stderr, "invalid scenario:", err)
			invalid = true
			continue
		}
		prepared = append(prepared, p)
	}
	if invalid {
		return ExitInvalid
	}
	if SetMemoryLimit != nil {
		SetMemoryLimit(memoryLimit(prepared))
	}

	results := make([]*report.Scenario, len(prepared))
	errs := make([]error, len(prepared))
	progress := newProgress(stderr)
	for _, p := range prepared {
		p.Progress = progress.of(p.Scenario.Name, p.Traffic.Count)
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, max(1, min(runtime.GOMAXPROCS(0), 4)))
	for i, p := range prepared {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			results[i], errs[i] = p.Run(ctx, newLimiter)
		}()
	}
	wg.Wait()
	progress.done()
	rep := &report.Report{}
	broken := false
	for i, r := range results {
		if errs[i] != nil {
			_, _ = fmt.Fprintf(stderr, "simulator: %s: %v\n", prepared[i].Scenario.File, errs[i])
			broken = true
			continue
		}
		rep.Add(r)
	}

	notes := stdout
	if o.format == "json" {
		notes = stderr // keep standard output valid JSON
		err = report.WriteJSON(stdout, rep)
	} else {
		err = report.WriteText(stdout, rep)
	}
	if err != nil {
		_, _ = fmt.Fprintln(stderr, "simulator:", err)
		return ExitFailed
	}
	if o.report != "" {
		if err := writeReport(o.report, rep); err != nil {
			_, _ = fmt.Fprintln(stderr, "simulator: writing the report:", err)
			return ExitFailed
		}
		_, _ = fmt.Fprintf(notes, "report: %s (charts), %s, %s\n", filepath.Join(o.report, "index.html"), filepath.Join(o.report, "report.json"), filepath.Join(o.report, "report.txt"))
	}
	if broken || rep.Failed > 0 {
		return ExitFailed
	}
	return ExitOK
}

func writeReport(dir string, rep *report.Report) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, write := range map[string]func(io.Writer, *report.Report) error{
		"index.html":  report.WriteHTML,
		"report.json": report.WriteJSON,
		"report.txt":  report.WriteText,
	} {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		err = write(f, rep)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func checkEngine(e string) error {
	if e != sim.EngineRedis && e != sim.EngineModel {
		return fmt.Errorf("--engine %q: want %s or %s", e, sim.EngineRedis, sim.EngineModel)
	}
	return nil
}
