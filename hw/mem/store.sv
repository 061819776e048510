// Backing storage of one memory tier, held in C++ (store.cpp) and reached
// through DPI: a tier of hundreds of MiB cannot be a Verilog array that the
// generator initialises. One access per cycle; read data is registered.
// Out-of-range accesses are filtered by the controller, never reach here.
import "DPI-C" function void openrdu_store_open(input int tier, input longint capacity);
import "DPI-C" function int openrdu_store_read32(input int tier, input longint addr);
import "DPI-C" function void openrdu_store_write32(input int tier, input longint addr, input int data);

module openrdu_store #(
    parameter integer TIER = 0,
    parameter integer WORD_BYTES = 16,
    parameter longint CAPACITY = 4096,
    parameter integer ADDR_BITS = 32
) (
    input  wire                      clk,
    input  wire                      en,
    input  wire                      we,
    input  wire [ADDR_BITS-1:0]      addr,
    input  wire [8*WORD_BYTES-1:0]   wdata,
    output reg  [8*WORD_BYTES-1:0]   rdata
);
    initial begin
        openrdu_store_open(TIER, CAPACITY);
        rdata = '0;
    end

    always @(posedge clk) begin
        if (en) begin
            for (int i = 0; i < WORD_BYTES / 4; i++) begin
                if (we)
                    openrdu_store_write32(TIER, longint'(addr) + 4 * i, wdata[32 * i +: 32]);
                else
                    rdata[32 * i +: 32] <= openrdu_store_read32(TIER, longint'(addr) + 4 * i);
            end
        end
    end
endmodule
