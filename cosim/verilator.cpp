// Copyright cocotb contributors
// Licensed under the Revised BSD License, see LICENSE for details.
// SPDX-License-Identifier: BSD-3-Clause
//
// OpenRDU's simulator main: cocotb's share/lib/verilator/verilator.cpp (cocotb
// 2.1) with a clock this loop drives itself. A testbench starts it through
// openrdu_clock_start (cosim/sim_clock.py, over ctypes) where it would start
// cocotb's GPI clock. cocotb's clock toggles the port from a cbAfterDelay timer
// with an inertial put, so the loop evaluates the model once with nothing
// changed and again after the put; here the port's storage is flipped at the
// edge time in that put's place, and a time step's first evaluation runs only
// when something changed, and the value-change checks after an evaluation
// or a callback region run only when an evaluation, the edge or a VPI put may
// have moved a value. Everything else (callback order, the checks
// themselves) is cocotb's.

#include <libgen.h>  // basename
#include <stdio.h>   // stderr, fprintf

#include <algorithm>  // std::min
#include <cstdint>    // uint64_t
#include <memory>     // std::unique_ptr
#include <string>     // std::string

#include "Vtop.h"
#include "verilated.h"
#include "verilated_vpi.h"

#ifndef VM_TRACE_FST
// emulate new verilator behavior for legacy versions
#define VM_TRACE_FST 0
#endif

#if VM_TRACE
#if VM_TRACE_FST
#include <verilated_fst_c.h>
using verilated_trace_t = VerilatedFstC;
#elif VM_TRACE_SAIF
#include <verilated_saif_c.h>
using verilated_trace_t = VerilatedSaifC;
#else
// VM_TRACE_VCD
#include <verilated_vcd_c.h>
using verilated_trace_t = VerilatedVcdC;
#endif
static verilated_trace_t *tfp;
#endif

static vluint64_t main_time = 0;  // Current simulation time
#if VM_COVERAGE
static bool coverage_per_instance = false;
#endif

double sc_time_stamp() {  // Called by $time in Verilog
    return main_time;     // converts to double, to match
                          // what SystemC does
}

extern "C" {
void vlog_startup_routines_bootstrap(void);
}

namespace {

// The clock a testbench asked this loop to drive: a 1-bit top-level input.
struct LoopClock {
    CData *storage = nullptr;  // the port's storage, flipped at each edge
    uint64_t high = 0;          // steps high, then steps low, per period
    uint64_t low = 0;
    uint64_t next_edge = 0;
    CData value = 0;
    bool running = false;
};

LoopClock loop_clock;

}  // namespace

extern "C" {

// Start driving top-level port ``port`` (``path`` is its VPI name) as cocotb's
// GpiClock::start does: the start value is put now, inertially, and the port
// toggles ``high`` steps later, then every ``low`` and ``high`` steps in turn.
// Returns 0, or -1 with a message on stderr.
__attribute__((visibility("default"))) int openrdu_clock_start(
    const char *port, const char *path, uint64_t high, uint64_t low,
    int start_high) {
    if (loop_clock.running) {
        fprintf(stderr, "openrdu_clock_start: the clock is already running\n");
        return -1;
    }
    const VerilatedScope *scope = Verilated::threadContextp()->scopeFind("TOP");
    VerilatedVar *var = scope ? scope->varFind(port) : nullptr;
    if (!var || var->vltype() != VLVT_UINT8 || var->entBits() != 1 ||
        var->dims() > 1 || !var->isPublicRW() || var->vldir() != VLVD_IN) {
        fprintf(stderr,
                "openrdu_clock_start: %s is not a public 1-bit top-level "
                "input\n",
                port);
        return -1;
    }
    vpiHandle handle = vpi_handle_by_name(const_cast<PLI_BYTE8 *>(path), nullptr);
    if (!handle || high < 1 || low < 1) {
        fprintf(stderr, "openrdu_clock_start: no signal %s, or a bad period\n",
                path);
        return -1;
    }
    loop_clock.storage = static_cast<CData *>(var->datap());
    loop_clock.high = high;
    loop_clock.low = low;
    loop_clock.value = start_high ? 1 : 0;
    loop_clock.next_edge = main_time + (start_high ? high : low);
    loop_clock.running = true;
    s_vpi_value value{};
    value.format = vpiIntVal;
    value.value.integer = loop_clock.value;
    s_vpi_time when{};
    when.type = vpiSimTime;
    // The pending put holds its own copy of the port's handle.
    vpi_put_value(handle, &value, &when, vpiInertialDelay);
    vpi_release_handle(handle);
    return 0;
}

// Stop the clock; the port keeps its value. Returns 0, or -1 if it was not running.
__attribute__((visibility("default"))) int openrdu_clock_stop(void) {
    if (!loop_clock.running) return -1;
    loop_clock.running = false;
    return 0;
}

}

// Whether a value a value-change callback watches may have moved since the
// last checks: an evaluation or the loop's clock edge moves values; a VPI put
// (vpi_put_value, immediate or applied from the inertial queue) sets
// evalNeeded instead. Verilator's vpi_put_value_array sets no flag; cocotb 2.1
// does not call it. Where none of these happened the checks would find
// nothing, so they are skipped: cocotb's loop runs them after every
// evaluation and callback region, and in a clock edge's time step three of
// those five find nothing while no testbench is waiting.
static bool values_moved = true;

static inline bool settle_value_callbacks() {
    bool cbs_called, again;

    // Call Value Change callbacks
    // These can modify signal values so we loop
    // until there are no more changes
    cbs_called = again = VerilatedVpi::callValueCbs();
    while (again) {
        again = VerilatedVpi::callValueCbs();
    }

    return cbs_called;
}

static inline void settle_moved_values() {
    if (values_moved || VerilatedVpi::evalNeeded()) {
        settle_value_callbacks();
        values_moved = false;
    }
}

// One evaluation of the model, after which any watched value may have moved.
static inline void evaluate(Vtop &top) {
    top.eval_step();
    VerilatedVpi::clearEvalNeeded();
    values_moved = true;
}

void wrap_up() {
    VerilatedVpi::callCbs(cbEndOfSimulation);

#if VM_TRACE
    if (tfp) {
        // We don't delete the trace object to avoid deadlock in verilator sims.
        tfp->close();
    }
#endif

    // VM_COVERAGE is a define which is set if Verilator is
    // instructed to collect coverage (when compiling the simulation)
#if VM_COVERAGE
    if (coverage_per_instance) {
        Verilated::threadContextp()->coveragep()->forcePerInstance(true);
    }
    VerilatedCov::write();  // Uses +verilator+coverage+file+<filename>,
                            // defaults to coverage.dat
#endif
}

int main(int argc, char **argv) {
#if VM_TRACE_FST
    const char *traceFile = "dump.fst";
#elif VM_TRACE_SAIF
    const char *traceFile = "dump.saif";
#else
    const char *traceFile = "dump.vcd";
#endif
    bool traceOn = false;
    bool traceFlush = false;
    bool coveragePerInstance = false;

    for (int i = 1; i < argc; i++) {
        std::string arg = std::string(argv[i]);
        if (arg == "--coverage-per-instance") {
#if VM_COVERAGE
            coveragePerInstance = true;
#else
            fprintf(stderr,
                    "Error: --coverage-per-instance requires the design to be "
                    "built with coverage support\n");
            return -1;
#endif
        } else if (arg == "--trace") {
#if VM_TRACE
            traceOn = true;
#else
            fprintf(stderr,
                    "Error: --trace requires the design to be built with trace "
                    "support\n");
            return -1;
#endif
        } else if (arg == "--trace-flush") {
            traceFlush = true;
        } else if (arg == "--trace-file") {
            if (++i < argc) {
                traceFile = argv[i];
            } else {
                fprintf(stderr, "Error: --trace-file requires a parameter\n");
                return -1;
            }
        } else if (arg == "--help") {
            fprintf(
                stderr,
                "usage: %s [--coverage-per-instance] [--trace] [--trace-flush] "
                "[--trace-file TRACEFILE]\n"
                "\n"
                "cocotb + Verilator sim\n"
                "\n"
                "options:\n"
                "  --coverage-per-instance  Force per-instance coverage "
                "(requires coverage build)\n"
                "  --trace                  Enable tracing (VCD, SAIF or FST)\n"
                "  --trace-flush            Flush trace at each time step "
                "(slow)\n"
                "  --trace-file             Specify the trace file name (%s by "
                "default)\n",
                basename(argv[0]), traceFile);
            return 0;
        }
    }

    Verilated::commandArgs(argc, argv);
#if VM_COVERAGE
    coverage_per_instance = coveragePerInstance;
#endif
#ifdef VERILATOR_SIM_DEBUG
    Verilated::debug(99);
#endif
    std::unique_ptr<Vtop> top(new Vtop(""));
    Verilated::fatalOnVpiError(false);  // otherwise it will fail on systemtf

#ifdef VERILATOR_SIM_DEBUG
    Verilated::internalsDump();
#endif

#if VM_TRACE
    Verilated::traceEverOn(true);
    if (traceOn) {
        tfp = new verilated_trace_t;
        top->trace(tfp, 99);
        tfp->open(traceFile);
    }
#endif

    vlog_startup_routines_bootstrap();
    Verilated::addExitCb([](void *) { wrap_up(); }, nullptr);
    VerilatedVpi::callCbs(cbStartOfSimulation);
    settle_value_callbacks();

    bool first_step = true;
    while (!Verilated::gotFinish()) {
        // cocotb's loop evaluates the model first, then applies the inertial
        // puts (its clock's among them) and evaluates again while anything
        // changed. With no input changed since the last evaluation that first
        // one changes nothing: it runs only when a callback put a value (and
        // on the first step). The loop's clock edge takes the place of the put,
        // before the value-change checks, so RisingEdge wakes testbenches before
        // the edge is evaluated, as with cocotb's clock.
        if (first_step || VerilatedVpi::evalNeeded()) {
            evaluate(*top);
        }
        first_step = false;
        const bool edge =
            loop_clock.running && loop_clock.next_edge == main_time;
        if (edge) {
            loop_clock.value = !loop_clock.value;
            *loop_clock.storage = loop_clock.value;
            values_moved = true;
            loop_clock.next_edge +=
                loop_clock.value ? loop_clock.high : loop_clock.low;
        }
        VerilatedVpi::doInertialPuts();
        settle_moved_values();
        bool again = edge || VerilatedVpi::evalNeeded();
        do {
            // We must evaluate whole design until we process all 'events' for
            // this time step
            while (again) {
                evaluate(*top);
                VerilatedVpi::doInertialPuts();
                settle_moved_values();
                again = VerilatedVpi::evalNeeded();
            }

            // Run ReadWrite callback as we are done processing this eval step
            VerilatedVpi::callCbs(cbReadWriteSynch);
            VerilatedVpi::doInertialPuts();
            settle_moved_values();
            again = VerilatedVpi::evalNeeded();
        } while (again);

        top->eval_end_step();

        // Call ReadOnly callbacks
        VerilatedVpi::callCbs(cbReadOnlySynch);

#if VM_TRACE
        if (tfp) {
            tfp->dump(main_time);
            if (traceFlush) {
                tfp->flush();
            }
        }
#endif
        // cocotb controls the clock inputs using cbAfterDelay so
        // skip ahead to the next registered callback
        const vluint64_t NO_TOP_EVENTS_PENDING = static_cast<vluint64_t>(~0ULL);
        vluint64_t next_time_cocotb = VerilatedVpi::cbNextDeadline();
        vluint64_t next_time_timing =
            top->eventsPending() ? top->nextTimeSlot() : NO_TOP_EVENTS_PENDING;
        vluint64_t next_time = std::min(next_time_cocotb, next_time_timing);
        if (loop_clock.running) {
            next_time = std::min<vluint64_t>(next_time, loop_clock.next_edge);
        }

        // If there are no more cbAfterDelay callbacks,
        // the next deadline is max value, so end the simulation now
        if (next_time == NO_TOP_EVENTS_PENDING) {
            break;
        } else {
            main_time = next_time;
        }

        // Call registered NextSimTime
        // It should be called in simulation cycle before everything else
        // but not on first cycle
        VerilatedVpi::callCbs(cbNextSimTime);
        settle_moved_values();

        // Call registered timed callbacks (e.g. clock timer)
        // These are called at the beginning of the time step
        // before the iterative regions (IEEE 1800-2012 4.4.1)
        VerilatedVpi::callTimedCbs();
        settle_moved_values();
    }

    top->final();

    wrap_up();

#if VM_TRACE
    if (tfp) {
        delete tfp;
        tfp = nullptr;
    }
#endif

    // Fail the sim if any assertion/error fired during the run.
    if (Verilated::threadContextp()->errorCount() > 0) {
        return 1;
    }

    return 0;
}
