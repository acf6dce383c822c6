import t from 'tap';
import { moduleScenarios } from '../scenarios/modules';
import { STACKS } from '../stacks';

moduleScenarios(t, STACKS['modular']);
