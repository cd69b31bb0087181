/* SPDX-License-Identifier: MIT */
/*
 * example-agent: the smallest complete user of libtokenbudget, written to be
 * copied. It asks tokenbudgetd for an allocation before "calling a model",
 * reports cumulative usage as the work progresses, and releases the allocation
 * with the final totals. It does not call any model: the token counts are
 * simulated from the grant.
 *
 *   example-agent [ESTIMATE]      (ESTIMATE in tokens, default 1000)
 *
 * Exit status: 0 when the whole cycle succeeded, 1 otherwise.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "tokenbudget.h"

#define DEFAULT_ESTIMATE_TOKENS 1000
#define USEC_PER_SEC            1000000.0

static int parse_estimate(int argc, char **argv, uint64_t *ret) {
        char *end = NULL;
        unsigned long long v;

        if (argc < 2) {
                *ret = DEFAULT_ESTIMATE_TOKENS;
                return 0;
        }
        errno = 0;
        v = strtoull(argv[1], &end, 10);
        if (argc > 2 || errno != 0 || end == argv[1] || *end != '\0' || argv[1][0] == '-' || v == 0) {
                fprintf(stderr, "usage: example-agent [ESTIMATE]  (ESTIMATE: tokens, a positive integer)\n");
                return -EINVAL;
        }
        *ret = v;
        return 0;
}

/* Asks for a budget. A refusal because the budget is used up is normal: tell the user when to retry. */
static int request(tb_client *c, uint64_t estimate, tb_grant *ret) {
        /* Designated initialisers: every field left out is zero, which means "not sent". */
        const tb_request_params params = {
                .estimate = estimate,
                .task_class = "example", /* the daemon learns how estimates of this class turn out */
                .agent = "example-agent",
        };
        int r;

        r = tb_request(c, &params, ret);
        if (r == -EDQUOT) {
                uint64_t retry_usec = tb_client_retry_after_usec(c);

                if (retry_usec > 0)
                        fprintf(stderr, "Budget exhausted; retry in %.1f s.\n",
                                (double)retry_usec / USEC_PER_SEC);
                else
                        fprintf(stderr, "Budget exhausted; the daemon cannot tell when room frees up.\n");
                fprintf(stderr, "(%s)\n", tb_client_error(c));
                return r;
        }
        if (r < 0) {
                fprintf(stderr, "Request failed: %s\n", tb_client_error(c));
                return r;
        }
        printf("Allocation %s: %s %" PRIu64 " tokens (warn at %" PRIu64 ", hard limit %" PRIu64 ").\n",
               ret->allocation, ret->decision_name, ret->granted, ret->warn_at, ret->hard_limit);
        if (ret->decision == TB_DECISION_DEGRADED)
                printf("Less than asked for: a real agent would shrink the task (a smaller max_tokens).\n");
        return 0;
}

/*
 * Reports cumulative totals (not deltas: a retried report never counts twice).
 * A real agent would stop or shrink its work once the state leaves "ok".
 */
static int report(tb_client *c, const tb_grant *g, uint64_t input_tokens, uint64_t output_tokens) {
        const tb_report_params params = {
                .allocation = g->allocation,
                .input_tokens = input_tokens,
                .output_tokens = output_tokens,
        };
        tb_report_reply reply;
        int r;

        r = tb_report(c, &params, &reply);
        if (r < 0) {
                fprintf(stderr, "Report failed: %s\n", tb_client_error(c));
                return r;
        }
        printf("Reported %" PRIu64 " input + %" PRIu64 " output tokens: used %" PRIu64 ", state %s.\n",
               input_tokens, output_tokens, reply.used, reply.state_name);
        /* A state this library does not know yet (TB_STATE_UNKNOWN) is no reason to stop. */
        if (reply.state == TB_STATE_WARNING || reply.state == TB_STATE_EXCEEDED)
                printf("The allocation is past its %s threshold: a real agent would wrap up now.\n",
                       reply.state == TB_STATE_WARNING ? "warning" : "hard");
        return 0;
}

int main(int argc, char **argv) {
        TB_CLEANUP_CLIENT tb_client *c = NULL; /* closed when main returns */
        char *error = NULL;
        tb_grant grant;
        tb_release_reply released;
        uint64_t estimate, input_tokens, output_tokens;
        int r;

        if (parse_estimate(argc, argv, &estimate) < 0)
                return EXIT_FAILURE;

        /* NULL: $TOKENBUDGET_SOCKET, then the system socket, then the user-session socket. */
        r = tb_client_open(NULL, &c, &error);
        if (r < 0) {
                fprintf(stderr, "%s\n", error ? error : "cannot connect to tokenbudgetd");
                free(error);
                return EXIT_FAILURE;
        }

        r = request(c, estimate, &grant);
        if (r < 0)
                return EXIT_FAILURE;

        /* Simulate two model calls: about a third of the grant, then about three quarters in total. */
        input_tokens = grant.granted / 4;
        output_tokens = grant.granted / 12;
        if (report(c, &grant, input_tokens, output_tokens) < 0)
                return EXIT_FAILURE;
        input_tokens = grant.granted / 2;
        output_tokens = grant.granted / 4;
        if (report(c, &grant, input_tokens, output_tokens) < 0)
                return EXIT_FAILURE;

        /* Settle with the final totals; what was reserved but not used goes back to the budgets. */
        r = tb_release(c,
                       &(tb_release_params){
                               .allocation = grant.allocation,
                               .input_tokens = input_tokens,
                               .output_tokens = output_tokens,
                       },
                       &released);
        if (r < 0) {
                fprintf(stderr, "Release failed: %s\n", tb_client_error(c));
                return EXIT_FAILURE;
        }
        printf("Released %s: used %" PRIu64 " tokens, refunded %" PRIu64 ".\n", grant.allocation,
               released.used, released.refunded);
        /* Closing (here by TB_CLEANUP_CLIENT) also settles any allocation still open, at the usage
         * reported so far. */
        return EXIT_SUCCESS;
}
