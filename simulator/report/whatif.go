package report

import (
	"bytes"
	"cmp"
	"fmt"
	"io"
	"slices"

	"github.com/tollgate-dev/tollgate/simulator/engine"
	"github.com/tollgate-dev/tollgate/simulator/traffic"
)

// WhatIf is what `simulator whatif` prints: a recorded trace replayed under a proposed
// config, and the calls whose fate would change, per user and per tool.
type WhatIf struct {
	Trace
	Server string
	// Users and Names are the users and the tools (prompts, resources) with a changed call,
	// most changes first.
	Users []Change
	Names []Change
	// Tiers are every tier the trace's calls were decided in ("-": none), when the trace
	// recorded any: what changes for each tier's users.
	Tiers []Change
}

// Change counts one user's or one tool's trace calls and those whose fate changed.
type Change struct {
	User         string // for a user row
	Method, Name string // for a tool row
	// Tier is a tier row's tier, or a user row's tiers when the trace recorded tiers.
	Tier        string
	Calls       int64
	NowRejected int64
	NowAdmitted int64
}

// WhatIfBuilder assembles a what-if as the replay's outcomes come.
type WhatIfBuilder struct {
	w      *WhatIf
	users  map[string]*Change
	names  map[nameKey]*Change
	tiers  map[string]*Change
	tiered *tierTally // each user's tiers
	// recorded: a trace call recorded a tier (tiers are then shown).
	recorded bool
}

// NewWhatIf starts the what-if of traceFile (read into tr) replayed for server.
func NewWhatIf(traceFile, server string, tr *traffic.Traffic) *WhatIfBuilder {
	return &WhatIfBuilder{
		w:     &WhatIf{Trace: Trace{File: traceFile, Skipped: tr.TraceSkipped, UnknownTiers: tr.UnknownTiers}, Server: server},
		users: map[string]*Change{}, names: map[nameKey]*Change{}, tiers: map[string]*Change{}, tiered: newTierTally(),
	}
}

// Observe compares a trace call's recorded decision with the one it gets now (the same
// comparison as a scenario report's trace line).
func (b *WhatIfBuilder) Observe(e traffic.Event, o engine.Outcome) {
	if e.Source != traffic.SourceTrace {
		return
	}
	b.w.add(e, o)
	ch := change(e, o)
	u := b.users[e.User]
	if u == nil {
		u = &Change{User: e.User}
		b.users[e.User] = u
	}
	u.add(ch, int64(len(e.Calls)))
	b.recorded = b.recorded || e.Tier != "" || e.UnknownTier != ""
	b.tiered.add(e, o)
	label := tierLabel(e)
	tc := b.tiers[label]
	if tc == nil {
		tc = &Change{Tier: label}
		b.tiers[label] = tc
	}
	tc.add(ch, int64(len(e.Calls)))
	for _, c := range e.Calls {
		k := nameKey{c.Method, c.Name}
		n := b.names[k]
		if n == nil {
			n = &Change{Method: c.Method, Name: c.Name}
			b.names[k] = n
		}
		n.add(ch, 1)
	}
}

// Finish lists the users and tools with a changed call.
func (b *WhatIfBuilder) Finish() *WhatIf {
	b.w.Users = changed(b.users)
	b.w.Names = changed(b.names)
	if b.recorded {
		for i := range b.w.Users {
			b.w.Users[i].Tier = b.tiered.of(b.w.Users[i].User)
		}
		for _, c := range b.tiers {
			b.w.Tiers = append(b.w.Tiers, *c)
		}
		slices.SortFunc(b.w.Tiers, func(a, b Change) int { return cmp.Compare(a.Tier, b.Tier) })
		b.w.Tiers = b.w.Tiers[:min(len(b.w.Tiers), tierRows)]
	}
	return b.w
}

func (c *Change) add(ch int, n int64) {
	c.Calls += n
	switch ch {
	case nowRejected:
		c.NowRejected += n
	case nowAdmitted:
		c.NowAdmitted += n
	}
}

// changed lists the rows with a changed call: most changes first, then by name.
func changed[K comparable](m map[K]*Change) []Change {
	var out []Change
	for _, c := range m {
		if c.NowRejected+c.NowAdmitted > 0 {
			out = append(out, *c)
		}
	}
	slices.SortFunc(out, func(a, b Change) int {
		return cmp.Or(cmp.Compare(b.NowRejected+b.NowAdmitted, a.NowRejected+a.NowAdmitted),
			cmp.Compare(a.User, b.User), cmp.Compare(a.Method, b.Method), cmp.Compare(a.Name, b.Name), cmp.Compare(a.Tier, b.Tier))
	})
	return out
}

// WriteWhatIf prints a what-if as tables.
func WriteWhatIf(w io.Writer, wi *WhatIf) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "what if %s had run under the proposed rateLimiting of %s?\n", wi.File, wi.Server)
	fmt.Fprintf(&b, "%d calls replayed (%d records skipped): %d now rejected that got through, %d now admitted that were refused\n",
		wi.Replayed, wi.Skipped, wi.NowRejected, wi.NowAdmitted)
	if w := wi.Warning(); w != "" {
		fmt.Fprintf(&b, "warning: %s\n", w)
	}
	switch {
	case wi.Replayed == 0:
		// Not "no call would change": nothing was compared, so the answer says nothing.
		b.WriteString("vacuous: the trace holds no call to replay, so none could change\n")
	case len(wi.Users) == 0:
		b.WriteString("no call would change\n")
	default:
		user := func(c Change) string { return userLabel(c.User) }
		if len(wi.Tiers) > 0 {
			user = func(c Change) string { return userLabel(c.User) + " [" + c.Tier + "]" }
		}
		table(&b, "USER", wi.Users, user)
		table(&b, "TOOL", wi.Names, func(c Change) string { return c.Method + " " + c.Name })
	}
	if len(wi.Tiers) > 0 {
		table(&b, "TIER", wi.Tiers, func(c Change) string { return c.Tier })
	}
	_, err := w.Write(b.Bytes())
	return err
}

func table(b *bytes.Buffer, head string, rows []Change, label func(Change) string) {
	width := len(head)
	for _, r := range rows {
		width = max(width, len(label(r)))
	}
	fmt.Fprintf(b, "\n%-*s %9s %13s %13s\n", width, head, "CALLS", "NOW-REJECTED", "NOW-ADMITTED")
	for _, r := range rows {
		fmt.Fprintf(b, "%-*s %9d %13d %13d\n", width, label(r), r.Calls, r.NowRejected, r.NowAdmitted)
	}
}
