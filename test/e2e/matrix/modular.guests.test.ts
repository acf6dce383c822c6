import t from 'tap';
import { guestScenarios } from '../scenarios/guests';
import { STACKS } from '../stacks';

guestScenarios(t, STACKS['modular']);
