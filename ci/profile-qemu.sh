#!/usr/bin/env bash
# Where a node's QEMU spends its time while a tern-ci bench runs.
#
#   bash ci/profile-qemu.sh compute is:A            # the compute bench, IS class A
#   bash ci/profile-qemu.sh net 40 --receive-only   # 40 samples into each node
#
# Runs `cargo bench -p tern-ci --bench BENCH -- ARGS` with every
# `qemu-system-*` started with `-perfmap` (QEMU names its translated blocks by
# guest address in /tmp/perf-PID.map), samples each node's QEMU process with
# `perf record`, then prints for each node:
# - the share of samples in the translated guest code, the soft MMU (TLB
#   refill and page-table walk), the floating-point helpers, the rest of QEMU
#   and the host kernel. Debian's QEMU exports most function names; a sample
#   in a static function is put under the exported function that precedes it
#   in the binary (functions of one source file sit together), which is how
#   the page walkers (`x86_cpu_tlb_fill`'s file, `ptw.c`) count;
# - the kernel functions whose translated code took the most samples (a
#   block counts for the function its first guest instruction is in; time in
#   QEMU's helpers is not attributed to the guest function that called them).
# Needs root (the nodes sit in a network namespace), `perf` and `perl`.
# Results: docs/benchmarks.md ("Where IS's time went", "Where a receiving
# node's time went").
set -euo pipefail

cd "$(dirname "$0")/.."
out=$(mktemp -d /tmp/tern-profile.XXXXXX)
mkdir "$out/bin"
for arch in x86_64 aarch64; do
    printf '#!/bin/sh\nexec /usr/bin/qemu-system-%s -perfmap "$@"\n' "$arch" >"$out/bin/qemu-system-$arch"
    chmod +x "$out/bin/qemu-system-$arch"
done

bench_name=${1:?usage: ci/profile-qemu.sh BENCH [ARGS...]}
shift
PATH="$out/bin:$PATH" cargo bench -p tern-ci --bench "$bench_name" -- "$@" | tee "$out/bench.txt" &
bench=$!
for arch in x86_64 aarch64; do
    (
        until pid=$(pgrep -f "^/usr/bin/qemu-system-$arch -perfmap"); do
            kill -0 "$bench" 2>/dev/null || exit 0
            sleep 0.2
        done
        # Let QEMU start its vCPU thread: `perf record -p` follows the
        # threads that exist when it attaches.
        sleep 3
        perf record -q -F 999 -p "$pid" -o "$out/$arch.data" 2>/dev/null
    ) &
done
wait

# Perl that reads "ADDRESS NAME" lines, sorted by address, from the file
# named by $ARGV[0], and defines function_at(ADDRESS): the name of the last
# symbol at or below the address ("?" below the first).
symbol_table='
    open my $fh, "<", $ARGV[0] or die "$ARGV[0]: $!";
    my (@at, @name);
    while (<$fh>) { chomp; my ($a, $n) = split / /, $_, 2; push @at, hex $a; push @name, $n; }
    sub function_at { my ($a) = @_;
        return "?" if !@at || $a < $at[0];
        my ($lo, $hi) = (0, $#at);
        while ($lo < $hi) { my $mid = int(($lo + $hi + 1) / 2);
            if ($at[$mid] <= $a) { $lo = $mid } else { $hi = $mid - 1 } }
        $name[$lo] }
'

# function_symbols ELF NM-OPTIONS...: the ELF's function symbols as "ADDRESS
# NAME" lines, sorted by address.
function_symbols() {
    local elf=$1
    shift
    nm -n --defined-only "$@" "$elf" | sed -n 's/^\([0-9a-f]*\) [TtWw] /\1 /p'
}

categorise() { # categorise QEMU-BINARY PERF-DATA
    function_symbols "$1" -D >"$out/symbols"
    perf report -i "$2" --sort dso,sym --stdio 2>/dev/null | perl -e "$symbol_table"'
        my %share;
        while (<STDIN>) {
            next unless /^\s*([\d.]+)%\s+(.+?)\s+\[.\]\s+(\S+)/;
            my ($p, $dso, $sym) = ($1, $2, $3);
            my $class;
            if ($dso =~ /JIT/) { $class = "translated guest code" }
            elsif ($dso =~ /kernel/) { $class = "host kernel" }
            elsif ($dso =~ /qemu/) {
                $sym = function_at(hex $sym) if $sym =~ /^0x/;
                if ($sym =~ /^(float|u?int\d+_to_float|parts|round_|propagate|helper_(mul|add|sub|div|ucomi|comi|cvt|sqrt|min|max|vfp))/) {
                    $class = "floating-point helpers" }
                elsif ($sym =~ /tlb|probe_access|address_space_translate|get_pg_mode|mmu|asidx|memory_region_get_ram_ptr|get_ptr_rcu_reader|iotlb|get_phys|find_next_bit|ptw|helper_rsm|v8m_security_lookup|aa64_va_parameters|arm_security_space/) {
                    $class = "soft MMU (TLB refill, page walk)" }
                else { $class = "rest of QEMU" }
            } else { $class = "libraries" }
            $share{$class} += $p;
        }
        printf "  %6.2f%%  %s\n", $share{$_}, $_ for sort { $share{$b} <=> $share{$a} } keys %share;
    ' "$out/symbols"
}

# guest_functions KERNEL-ELF PERF-DATA: the kernel functions whose translated
# blocks took the most samples.
guest_functions() {
    function_symbols "$1" -C >"$out/kernel-symbols"
    perf report -i "$2" --sort sym --stdio 2>/dev/null | perl -e "$symbol_table"'
        my %share;
        while (<STDIN>) {
            next unless /^\s*([\d.]+)%\s+\[.\]\s+guest-0x([0-9a-f]+)/;
            $share{function_at(hex $2)} += $1;
        }
        my @top = (sort { $share{$b} <=> $share{$a} } keys %share)[0 .. 14];
        for (grep { defined } @top) {
            my $n = length($_) > 100 ? substr($_, 0, 97) . "..." : $_;
            printf "  %6.2f%%  %s\n", $share{$_}, $n;
        }
    ' "$out/kernel-symbols"
}

kernels="${CARGO_TARGET_DIR:-target}/kernels"
for arch in x86_64 aarch64; do
    [ -s "$out/$arch.data" ] || continue
    # cpu-clock samples: the event count is on-CPU nanoseconds.
    ns=$(perf report -i "$out/$arch.data" --stdio 2>/dev/null | sed -n 's/^# Event count (approx.): //p')
    echo "qemu-system-$arch: $((ns / 1000000)) ms on the CPU"
    categorise "/usr/bin/qemu-system-$arch" "$out/$arch.data"
    case $arch in
        x86_64) kernel="$kernels/x86_64-tern-pc/release/tern-pc" ;;
        aarch64) kernel="$kernels/aarch64-unknown-none/release/tern-virt" ;;
    esac
    echo "  translated code by kernel function ($kernel):"
    guest_functions "$kernel" "$out/$arch.data"
done
echo "samples and the bench's output: $out"
