package report

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// textUsers is how many users the terminal table lists.
const textUsers = 10

// WriteText writes the terminal summary: per scenario its verdict, totals, busiest users and
// every property's result (with the first violations of a failed one).
func WriteText(w io.Writer, r *Report) error {
	var b bytes.Buffer
	for _, s := range r.Scenarios {
		writeScenario(&b, s)
	}
	fmt.Fprintf(&b, "%d scenario%s: %d passed, %d failed\n", len(r.Scenarios), pluralS(len(r.Scenarios)), r.Passed, r.Failed)
	_, err := w.Write(b.Bytes())
	return err
}

func writeScenario(b *bytes.Buffer, s *Scenario) {
	fmt.Fprintf(b, "%s %s (%s)\n", verdict(s.OK), s.Name, s.File)
	if s.Description != "" {
		first, _, _ := strings.Cut(s.Description, "\n")
		fmt.Fprintf(b, "     %s\n", first)
	}
	fmt.Fprintf(b, "     server %s, %s mode, %d replica%s, %s, seed %d: %s\n",
		s.Server, s.Mode, s.Replicas, pluralS(s.Replicas), s.Duration, s.Seed, s.Decided())
	fmt.Fprintf(b, "     admitted %d, rejected %d, shadow-rejected %d\n", s.Totals.Admitted, s.Totals.Rejected, s.Totals.ShadowRejected)
	if line := s.OutageLine(); line != "" {
		fmt.Fprintf(b, "     %s\n", line)
	}
	if t := s.Trace; t != nil {
		fmt.Fprintf(b, "     trace %s: %d calls replayed (%d records skipped); %d now rejected that got through, %d now admitted that were refused\n",
			t.File, t.Replayed, t.Skipped, t.NowRejected, t.NowAdmitted)
		if w := t.Warning(); w != "" {
			fmt.Fprintf(b, "     warning: %s\n", w)
		}
	}
	top := Busiest(s.Users, textUsers)
	width, tierWidth := len("USER"), 0
	for _, u := range top {
		width = max(width, len(userLabel(u.User)))
		if u.Tier != "" {
			tierWidth = max(tierWidth, len("TIER"), len(u.Tier))
		}
	}
	// The tier column only when the run has tiers: a user's tier explains their limits.
	tier := func(v string) string {
		if tierWidth == 0 {
			return ""
		}
		return fmt.Sprintf(" %-*s", tierWidth, v)
	}
	// What the failure policy made of each user's calls, when Redis was down.
	down := func(v string) string {
		if len(s.Outages) == 0 {
			return ""
		}
		return "  " + v
	}
	fmt.Fprintf(b, "     %-*s%s %9s %9s %9s %16s%s\n", width, "USER", tier("TIER"), "CALLS", "ADMITTED", "REJECTED", "SHADOW-REJECTED", down("WHILE REDIS WAS DOWN"))
	for _, u := range top {
		fmt.Fprintf(b, "     %-*s%s %9d %9d %9d %16d%s\n", width, userLabel(u.User), tier(u.Tier), u.Requests, u.Admitted, u.Rejected, u.ShadowRejected, down(cmp.Or(u.Outage(), "-")))
	}
	if more := len(s.Users) - len(top); more > 0 {
		fmt.Fprintf(b, "     … and %d more user%s\n", more, pluralS(more))
	}
	if len(s.Tiers) > 0 {
		width := len("TIER")
		for _, t := range s.Tiers {
			width = max(width, len(t.Tier))
		}
		fmt.Fprintf(b, "     %-*s %9s %9s %9s %9s %16s\n", width, "TIER", "USERS", "CALLS", "ADMITTED", "REJECTED", "SHADOW-REJECTED")
		for _, t := range s.Tiers {
			fmt.Fprintf(b, "     %-*s %9d %9d %9d %9d %16d\n", width, t.Tier, t.Users, t.Requests, t.Admitted, t.Rejected, t.ShadowRejected)
		}
		if s.MoreTiers > 0 {
			fmt.Fprintf(b, "     … and %d more tier%s\n", s.MoreTiers, pluralS(s.MoreTiers))
		}
	}
	for _, c := range s.Checks {
		v := verdict(c.OK)
		if c.NotApplicable {
			v = "N/A "
		}
		fmt.Fprintf(b, "     %s %s: %s\n", v, c.Name, c.Summary)
		for _, v := range c.Violations {
			fmt.Fprintf(b, "          %s\n", strings.ReplaceAll(v, "\n", "\n          "))
		}
		if c.Count > len(c.Violations) {
			fmt.Fprintf(b, "          … and %d more\n", c.Count-len(c.Violations))
		}
	}
	b.WriteString("\n")
}

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "FAIL"
}

func pluralS(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// WriteJSON writes the report as indented JSON.
func WriteJSON(w io.Writer, r *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
