package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"sigs.k8s.io/yaml"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/simulator/engine"
	"github.com/tollgate-dev/tollgate/simulator/report"
	"github.com/tollgate-dev/tollgate/simulator/scenario"
	"github.com/tollgate-dev/tollgate/simulator/sim"
	"github.com/tollgate-dev/tollgate/simulator/traffic"
)

// whatIf runs `simulator whatif`: a decision log replayed under a proposed config, and what
// would change. Exit 0 when it could tell (whatever changed), 2 for a wrong command line,
// config or trace, 1 when the replay broke.
func whatIf(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("simulator whatif", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	trace := fs.String("trace", "", "")
	config := fs.String("config", "", "")
	engineName := fs.String("engine", sim.EngineRedis, "")
	err := fs.Parse(args)
	switch {
	case err != nil:
	case fs.NArg() > 0:
		err = fmt.Errorf("whatif: unexpected argument %q", fs.Arg(0))
	case *trace == "" || *config == "":
		err = errors.New("whatif needs --trace and --config")
	default:
		err = checkEngine(*engineName)
	}
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "simulator: %v\n\n%s", err, usage)
		return ExitInvalid
	}
	s, err := proposal(*config, *trace)
	var p *sim.Prepared
	if err == nil {
		p, err = sim.Prepare(s, nil)
	}
	if err != nil {
		_, _ = fmt.Fprintln(stderr, "simulator: invalid:", err)
		return ExitInvalid
	}
	p.Engine = *engineName
	if SetMemoryLimit != nil {
		SetMemoryLimit(memoryLimit([]*sim.Prepared{p}))
	}
	progress := newProgress(stderr)
	p.Progress = progress.of("whatif", p.Traffic.Count)
	wi := report.NewWhatIf(*trace, s.Server.Namespace+"/"+s.Server.Name, p.Traffic)
	_, err = p.Replay(ctx, func(_ int, ev traffic.Event, o engine.Outcome) { wi.Observe(ev, o) })
	progress.done()
	if err != nil {
		_, _ = fmt.Fprintln(stderr, "simulator:", err)
		return ExitFailed
	}
	if err := report.WriteWhatIf(stdout, wi.Finish()); err != nil {
		_, _ = fmt.Fprintln(stderr, "simulator:", err)
		return ExitFailed
	}
	return ExitOK
}

// proposal is the scenario whatif replays: the trace under the rateLimiting of file, an
// MCPServer manifest (kind: MCPServer) or a scenario (its traffic, trace and expectations
// are not used).
func proposal(file, trace string) (*scenario.Scenario, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, &scenario.Error{File: file, Msg: err.Error()}
	}
	var kind struct {
		Kind string `json:"kind"`
	}
	if err := yaml.Unmarshal(data, &kind); err == nil && kind.Kind == "MCPServer" {
		var m v1alpha1.MCPServer
		if err := yaml.Unmarshal(data, &m); err != nil {
			return nil, &scenario.Error{File: file, Msg: "not an MCPServer: " + err.Error()}
		}
		if m.Spec.RateLimiting == nil {
			return nil, &scenario.Error{File: file, Field: "spec.rateLimiting", Msg: "required: the config to replay the trace under"}
		}
		return scenario.ForTrace(file, trace, scenario.Server{Namespace: m.Namespace, Name: m.Name}, m.Spec.RateLimiting)
	}
	s, err := scenario.Load(file)
	if err != nil {
		return nil, err
	}
	return scenario.ForTrace(file, trace, s.Server, s.RateLimiting)
}
