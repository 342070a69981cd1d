package report

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/tollgate-dev/tollgate/simulator/check"
	"github.com/tollgate-dev/tollgate/simulator/engine"
	"github.com/tollgate-dev/tollgate/simulator/traffic"
)

// TierRow is one tier's calls: the users who made a call in it, and the calls' outcomes.
// Tier "" is the calls in no tier (the default buckets).
type TierRow struct {
	Tier  string `json:"tier"`
	Users int    `json:"users"`
	check.Tally
}

// Bounds of what the reports spell out about tiers: a user's tiers, the tier rows.
const (
	userTiers  = 3
	tierRows   = 20
	noTier     = "-"
	notInTiers = " (not configured)"
)

// tierLabel names the tier an event was decided in, for reports: the tier, "-" for none, or
// a trace's recorded tier that the config does not have (decided with the default buckets).
func tierLabel(ev traffic.Event) string {
	switch {
	case ev.UnknownTier != "":
		return ev.UnknownTier + notInTiers
	case ev.Tier == "":
		return noTier
	}
	return ev.Tier
}

// tierTally counts a run's calls per tier and each user's tiers (most users have one; a
// user who changes tier has several). Kept only when the run has tiers.
type tierTally struct {
	tiers map[string]check.Tally
	users map[string][]string // each user's tier labels, in order of first call
}

func newTierTally() *tierTally {
	return &tierTally{tiers: map[string]check.Tally{}, users: map[string][]string{}}
}

func (t *tierTally) add(ev traffic.Event, o engine.Outcome) {
	label := tierLabel(ev)
	count(t.tiers, label, o, int64(len(ev.Calls)))
	if ev.User == "" {
		return
	}
	if ts := t.users[ev.User]; !slices.Contains(ts, label) {
		t.users[ev.User] = append(ts, label)
	}
}

// of is a user's tiers for a report's user row: "pro", or "-, gold" for a user who moved.
func (t *tierTally) of(user string) string {
	ts := t.users[user]
	if len(ts) <= userTiers {
		return strings.Join(ts, ", ")
	}
	return strings.Join(ts[:userTiers], ", ") + fmt.Sprintf(" +%d", len(ts)-userTiers)
}

// rows are the tiers' rows, "-" first, then by name; at most tierRows, and how many more.
func (t *tierTally) rows() ([]TierRow, int) {
	users := map[string]int{}
	for _, ts := range t.users {
		for _, l := range ts {
			users[l]++
		}
	}
	var out []TierRow
	for l, tally := range t.tiers {
		out = append(out, TierRow{Tier: l, Users: users[l], Tally: tally})
	}
	// "-" sorts before every tier name (DNS labels start with a letter or digit).
	slices.SortFunc(out, func(a, b TierRow) int { return cmp.Compare(a.Tier, b.Tier) })
	if len(out) > tierRows {
		return out[:tierRows], len(out) - tierRows
	}
	return out, 0
}

// unknownTiers describes the trace's calls recorded in tiers the config does not have, or "".
func unknownTiers(m map[string]int64) string {
	if len(m) == 0 {
		return ""
	}
	var total int64
	names := slices.Sorted(maps.Keys(m))
	var parts []string
	for i, n := range names {
		total += m[n]
		if i < userTiers*2 {
			parts = append(parts, fmt.Sprintf("%s %d", n, m[n]))
		}
	}
	if len(names) > len(parts) {
		parts = append(parts, fmt.Sprintf("and %d more", len(names)-len(parts)))
	}
	return fmt.Sprintf("%d calls recorded in a tier the config does not have (%s): decided with the default buckets", total, strings.Join(parts, ", "))
}
