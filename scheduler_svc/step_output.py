"""Post-processing a step's result: append each sampled token, then finish or intercept.

For every request that sampled in the step: the token is appended (and decoded to text for the
session, stop strings and text triggers), then, in this order, the request finishes (eos, a stop
string, max_tokens, the maximum model length) or is intercepted (a scripted stop after exactly N
segment tokens, or a tool trigger the model completed). An interception asks the policy what to
do with the context (preserve, discard, swap) and pauses the request in the request table.

Ending a request (here, and for aborts and expired pauses) goes through `finish`, which emits
its Finished event with its usage.
"""

from __future__ import annotations

from scheduler_svc.admission_control import QueueWaitControl
from scheduler_svc.config import ExecutorDescription
from scheduler_svc.events import Event, Finished, Intercepted, TokenDeltas, Usage
from scheduler_svc.interception import find_stop_string
from scheduler_svc.policies import PauseAction, Policy
from scheduler_svc.request import FinishReason, PendingCall, Request, Status
from scheduler_svc.request_table import RequestTable
from scheduler_svc.stats import SchedulerStats


class StepOutput:
    def __init__(
        self,
        table: RequestTable,
        policy: Policy,
        stats: SchedulerStats,
        executor: ExecutorDescription,
        admission: QueueWaitControl,
    ) -> None:
        self._table = table
        self._policy = policy
        self._stats = stats
        self._eos_token_ids = frozenset(executor.eos_token_ids)
        self._max_model_len = executor.max_model_len
        self._admission = admission

    def apply(
        self, sampled_request_ids: list[int], sampled_token_ids: list[int], positions: list[int], now: float
    ) -> list[Event]:
        """Append each token the step sampled (token_ids[i] to request_ids[i], which then has
        positions[i] tokens); a request no longer ACTIVE (finished or aborted meanwhile), or one
        of another length (paused and resumed while a plan ahead computed), is skipped. Returns the events: the iteration's TokenDeltas first, then the finishes and
        interceptions the tokens caused, in the order of the requests."""
        request_ids: list[int] = []
        token_ids: list[int] = []
        texts: list[str] = []
        events: list[Event] = [TokenDeltas(request_ids, token_ids, texts)]
        requests, active = self._table.requests, Status.ACTIVE
        admission = self._admission if self._admission.is_enabled else None
        for request_id, token_id, position in zip(
            sampled_request_ids, sampled_token_ids, positions, strict=True
        ):
            request = requests.get(request_id)
            if request is None or request.status is not active or len(request.token_ids) + 1 != position:
                continue
            request.token_ids.append(token_id)
            request.num_generated += 1
            if admission is not None and request.num_generated == 1:
                admission.started(request.request_id, now - request.arrival_s)
            text = request.decoder.push(token_id)
            request_ids.append(request.request_id)
            token_ids.append(token_id)
            texts.append(text)
            self.after_token(request, token_id, text, now, events)
        return events if request_ids else events[1:]

    def after_token(
        self, request: Request, token_id: int, text: str, now: float, events: list[Event]
    ) -> None:
        """Finish or intercept the request if its last token, completing `text`, says so."""
        reason = self._finish_reason(request, token_id, text)
        if reason is not None:
            events.append(self.finish(request, reason))
        elif request.script or request.tools:
            intercepted = self._maybe_intercept(request, text, now)
            if intercepted is not None:
                events.append(intercepted)

    def finish(self, request: Request, reason: FinishReason) -> Finished:
        """End the request (whatever its state) and free everything it holds."""
        self._table.finish(request, reason)
        if self._admission.is_enabled:
            self._admission.finished(request.request_id, self._table.paused.last_now, len(request.token_ids))
        self._stats.finished_requests += 1
        usage = Usage(
            prompt_tokens=request.num_prompt_tokens,
            generated_tokens=request.num_generated,
            returned_tokens=request.num_returned,
            recomputed_tokens=request.num_recomputed,
            interceptions=request.num_interceptions,
        )
        return Finished(request.request_id, reason, usage)

    def _finish_reason(self, request: Request, token_id: int, text: str) -> FinishReason | None:
        sampling = request.sampling
        if token_id in self._eos_token_ids and not sampling.ignore_eos:
            return FinishReason.EOS
        if text and sampling.stop and find_stop_string(request.decoder.text, text, sampling.stop):
            return FinishReason.STOP
        if request.num_generated >= sampling.max_tokens:
            return FinishReason.LENGTH
        if len(request.token_ids) >= self._max_model_len:
            return FinishReason.MAX_MODEL_LEN
        return None

    def _maybe_intercept(self, request: Request, text: str, now: float) -> Intercepted | None:
        num_segment_tokens = len(request.token_ids) - request.segment_start
        if request.script and request.script[0].after_tokens == num_segment_tokens:
            stop = request.script.popleft()
            return self._pause(request, stop.tool, request.decoder.text, "", stop.expected_duration_s, now)
        token_ids = request.token_ids
        for tool in request.tools:
            # Only a token-id trigger's length of the segment's ids is ever compared.
            num_ids = len(tool.stop_token_ids)
            tail = token_ids[max(request.segment_start, len(token_ids) - num_ids) :] if num_ids else ()
            call = tool.detect(request.decoder.text, tail, text)
            if call is not None:
                return self._pause(
                    request, call.name, call.call_text, call.arguments, tool.expected_duration_s, now
                )
        return None

    def _pause(
        self, request: Request, tool: str, call_text: str, arguments: str, expected_s: float, now: float
    ) -> Intercepted:
        rid = request.request_id
        # Set first: a policy may decide by the call (continuum learns per tool).
        request.pending_call = PendingCall(tool, call_text, now, expected_s)
        action = self._policy.on_pause(request, self._table.blocks, now)
        num_device = len(self._table.blocks.layouts[rid].device)
        if action is PauseAction.SWAP and not (num_device and self._table.blocks.can_swap_out(num_device)):
            action = PauseAction.DISCARD
        if action is PauseAction.SWAP:
            self._stats.swap_out_blocks += num_device
        rank = self._policy.evict_rank(request, now) if action is PauseAction.DISCARD else None
        self._table.pause(request, action, rank)
        request.pending_call.context_action = action
        request.num_interceptions += 1
        self._stats.count_interception(tool)
        return Intercepted(
            request_id=rid,
            tool=tool,
            call_text=call_text,
            arguments=arguments,
            num_context_tokens=len(request.token_ids),
            index=request.num_interceptions - 1,
            context_action=action,
        )
